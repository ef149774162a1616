//! Running actions on a packet (EXECUTE).

use super::Ovs;
use crate::transport::Error;
use crate::wire::action::Action;
use crate::wire::key::FlowKey;
use crate::wire::packet::execute_message;
use crate::wire::validate::validate_actions_only;

/// Packet operations on one datapath (from [`Ovs::packets`]).
#[derive(Debug)]
pub struct PacketHandle<'a> {
    pub(super) ovs: &'a mut Ovs,
    pub(super) dp_ifindex: i32,
}

impl PacketHandle<'_> {
    /// Runs `actions` on `packet` (an Ethernet frame of at least 14 bytes).
    /// `key` carries the metadata the actions may need: in_port, tunnel,
    /// skb_mark...
    pub fn execute(
        &mut self,
        packet: &[u8],
        key: FlowKey,
        actions: Vec<Action>,
    ) -> Result<(), Error> {
        if packet.len() < 14 {
            return Err(Error::PacketTooShort(packet.len()));
        }
        validate_actions_only(&actions)?;
        let msg = execute_message(self.dp_ifindex, packet, key, actions);
        self.ovs.call(&msg, 0).map(drop)
    }
}
