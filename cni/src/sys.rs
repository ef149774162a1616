//! Kernel knobs outside rtnetlink: sysctls, which act in the calling
//! thread's network namespace.

use std::io;

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
