//! Running actions on a packet (EXECUTE).

use super::Ovs;
use crate::transport::Error;
use crate::wire::action::Action;
use crate::wire::key::FlowKey;
use crate::wire::packet::{PacketMessage, execute_message};
use crate::wire::validate::validate_actions_only;

/// Checks an EXECUTE and builds it (shared by the sync and async handles).
pub(super) fn execute_request(
    dp_ifindex: i32,
    packet: &[u8],
    key: FlowKey,
    actions: Vec<Action>,
) -> Result<PacketMessage, Error> {
    if packet.len() < 14 {
        return Err(Error::PacketTooShort(packet.len()));
    }
    validate_actions_only(&actions)?;
    Ok(execute_message(dp_ifindex, packet, key, actions))
}

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
        let msg = execute_request(self.dp_ifindex, packet, key, actions)?;
        self.ovs.call(&msg, 0).map(drop)
    }
}
