//! The CNI spec versions the plugins speak.

use std::fmt;

/// A supported CNI spec version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// 0.3.0: rich results and chaining.
    V030,
    /// 0.3.1: as 0.3.0.
    V031,
    /// 0.4.0: CHECK, prevResult on DEL.
    V040,
    /// 1.0.0: no `version` in `ips`.
    V100,
    /// 1.1.0: STATUS, GC, more route fields.
    V110,
}

/// Every version, oldest first, as VERSION reports them.
pub const SUPPORTED: [Version; 5] = [
    Version::V030,
    Version::V031,
    Version::V040,
    Version::V100,
    Version::V110,
];

impl Version {
    /// The newest version.
    pub const LATEST: Version = Version::V110;

    /// Parses a version string; `None` for a version we do not speak.
    pub fn parse(text: &str) -> Option<Version> {
        SUPPORTED.into_iter().find(|v| v.as_str() == text)
    }

    /// The version as the spec writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V030 => "0.3.0",
            Version::V031 => "0.3.1",
            Version::V040 => "0.4.0",
            Version::V100 => "1.0.0",
            Version::V110 => "1.1.0",
        }
    }

    /// Whether results carry `ips[].version` (0.3.x and 0.4.0).
    pub fn ips_have_version(self) -> bool {
        self < Version::V100
    }

    /// Whether CHECK exists in this version.
    pub fn has_check(self) -> bool {
        self >= Version::V040
    }

    /// Whether STATUS and GC exist in this version.
    pub fn has_status_and_gc(self) -> bool {
        self >= Version::V110
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_round_trip_and_order() {
        for v in SUPPORTED {
            assert_eq!(Version::parse(v.as_str()), Some(v));
        }
        assert_eq!(Version::parse("0.2.0"), None);
        assert_eq!(Version::parse("1.1"), None);
        assert!(Version::V040.ips_have_version());
        assert!(!Version::V100.ips_have_version());
        assert!(!Version::V031.has_check());
        assert!(Version::V110.has_status_and_gc() && !Version::V100.has_status_and_gc());
    }
}
