//! Kernel knobs outside rtnetlink: sysctls and TX checksum offload (ethtool
//! ioctl). Both act in the calling thread's network namespace.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Writes `value` to `/proc/sys/<key>`; a key that does not exist (IPv6
/// disabled, say) is not an error.
pub fn sysctl_if_exists(key: &str, value: &str) -> io::Result<()> {
    let path = format!("/proc/sys/{key}");
    match std::fs::write(&path, value) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other.map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}"))),
    }
}

/// Makes the ARP cache of `ifname` react quickly to a changed MAC, as Weave
/// configured container interfaces.
pub fn configure_arp_cache(ifname: &str) -> io::Result<()> {
    sysctl_if_exists(&format!("net/ipv4/neigh/{ifname}/base_reachable_time"), "5")?;
    sysctl_if_exists(
        &format!("net/ipv4/neigh/{ifname}/delay_first_probe_time"),
        "2",
    )?;
    sysctl_if_exists(&format!("net/ipv4/neigh/{ifname}/ucast_solicit"), "1")
}

fn socket(domain: libc::c_int, kind: libc::c_int, protocol: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked before use.
    let fd = unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_STXCSUM: u32 = 0x17;

#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

#[repr(C)]
struct IfreqData {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

/// Turns TX checksum offload off on `ifname`: in Bridge mode the router
/// forwards captured frames as they are, so checksums must be complete.
pub fn tx_checksum_off(ifname: &str) -> io::Result<()> {
    if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad interface name",
        ));
    }
    let fd = socket(libc::AF_INET, libc::SOCK_DGRAM, 0)?;
    let mut value = EthtoolValue {
        cmd: ETHTOOL_STXCSUM,
        data: 0,
    };
    let mut req = IfreqData {
        name: [0; libc::IFNAMSIZ],
        data: (&mut value as *mut EthtoolValue).cast(),
        _pad: [0; 16],
    };
    for (dst, src) in req.name.iter_mut().zip(ifname.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: req is a valid ifreq whose data points at `value`, which
    // outlives the call; the kernel reads and writes an ethtool_value.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), SIOCETHTOOL as _, &mut req as *mut IfreqData) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = text.split(':');
    for byte in out.iter_mut() {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse() {
        assert_eq!(
            parse_mac("aa:01:02:03:04:ff"),
            Some([0xaa, 1, 2, 3, 4, 0xff])
        );
        assert_eq!(parse_mac("aa:01:02:03:04"), None);
        assert_eq!(parse_mac("aa:01:02:03:04:ff:00"), None);
        assert_eq!(parse_mac("zz:01:02:03:04:ff"), None);
    }
}
