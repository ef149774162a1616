//! [`DatapathOps`] on the kernel datapath, through the `odp` crate.

use odp::handle::{DatapathOptions, Ovs, VportSpec};
use odp::transport::Error as OdpError;

use super::datapath::{DatapathError, DatapathOps};

/// The kernel's Open vSwitch datapath, driven over generic netlink.
#[derive(Debug)]
pub struct OdpDatapath {
    ovs: Ovs,
    options: DatapathOptions,
}

impl OdpDatapath {
    /// Connects in the calling thread's namespace. New datapaths are made
    /// with `options` (upcall PIDs and features are the fastdp data plane's
    /// business; the defaults make a datapath without upcalls).
    pub fn connect(options: DatapathOptions) -> Result<OdpDatapath, DatapathError> {
        let ovs = Ovs::connect().map_err(|e| err("connecting to the kernel datapath", &e))?;
        Ok(OdpDatapath { ovs, options })
    }

    /// The underlying handle.
    pub fn ovs(&mut self) -> &mut Ovs {
        &mut self.ovs
    }
}

fn err(op: &str, e: &OdpError) -> DatapathError {
    DatapathError {
        op: op.to_string(),
        message: e.to_string(),
    }
}

fn is_absent(e: &OdpError) -> bool {
    matches!(e, OdpError::NotFound { .. } | OdpError::NoDevice { .. })
}

impl DatapathOps for OdpDatapath {
    fn create_datapath(&mut self, name: &str) -> Result<(), DatapathError> {
        let op = format!("creating datapath {name}");
        match self.ovs.datapaths().get(name) {
            Ok(_) => return Ok(()),
            Err(e) if is_absent(&e) => {}
            Err(e) => return Err(err(&op, &e)),
        }
        match self.ovs.datapaths().create(name, &self.options) {
            Ok(_) | Err(OdpError::Exists { .. }) => Ok(()),
            Err(e) => Err(err(&op, &e)),
        }
    }

    fn add_netdev_port(&mut self, datapath: &str, ifname: &str) -> Result<(), DatapathError> {
        let op = format!("adding {ifname} to datapath {datapath}");
        let dp = self
            .ovs
            .datapaths()
            .get(datapath)
            .map_err(|e| err(&op, &e))?;
        let mut vports = self.ovs.vports(dp.dp_ifindex);
        match vports.get(ifname) {
            Ok(_) => return Ok(()),
            Err(e) if is_absent(&e) => {}
            Err(e) => return Err(err(&op, &e)),
        }
        match vports.create(&VportSpec::netdev(ifname)) {
            Ok(_) | Err(OdpError::Exists { .. }) => Ok(()),
            Err(e) => Err(err(&op, &e)),
        }
    }

    fn delete_datapath(&mut self, name: &str) -> Result<bool, DatapathError> {
        match self.ovs.datapaths().delete(name) {
            Ok(()) => Ok(true),
            Err(e) if is_absent(&e) => Ok(false),
            Err(e) => Err(err(&format!("deleting datapath {name}"), &e)),
        }
    }
}
