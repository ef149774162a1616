//! Fuzz target bodies: every decoder of untrusted input, as plain functions
//! the cargo-fuzz targets in `cni/fuzz/` call and a unit test feeds with
//! deterministic noise.

use crate::config::NetConf;
use crate::env::CniEnv;
use crate::result::CniResult;
use crate::version::Version;

/// Decodes `data` as a network configuration and, when it parses, writes
/// its prevResult back in every layout.
pub fn fuzz_config(data: &[u8]) {
    if let Ok(conf) = NetConf::parse(data) {
        if let Some(prev) = conf.prev_result {
            for v in crate::version::SUPPORTED {
                let _ = prev.to_value(v);
            }
        }
    }
    let _ = crate::config::sniff_version(data);
    let _ = crate::plugin::version_answer(data);
}

/// Decodes `data` as a result (a prevResult or a delegate's answer) and
/// checks that what it writes reads back the same.
pub fn fuzz_result(data: &[u8]) {
    if let Ok(result) = CniResult::from_slice(data) {
        let value = result.to_value(Version::V110);
        let back = CniResult::from_value(&value);
        assert_eq!(back.as_ref(), Ok(&result), "result does not round-trip");
    }
}

/// Decodes `data` as an HTTP response from the router, and the bodies the
/// plugin reads from it.
pub fn fuzz_http_response(data: &[u8]) {
    if let Ok(response) = crate::http::parse_response(data) {
        let _ = crate::router::parse_owned(&response.body);
    }
}

/// Decodes environment values (`data` split on NUL into the variables).
pub fn fuzz_env(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let parts: Vec<String> = text.split('\0').map(str::to_string).collect();
    let keys = [
        "CNI_COMMAND",
        "CNI_CONTAINERID",
        "CNI_NETNS",
        "CNI_IFNAME",
        "CNI_ARGS",
        "CNI_PATH",
    ];
    let _ = CniEnv::from_lookup(|key| {
        keys.iter()
            .position(|k| *k == key)
            .and_then(|i| parts.get(i).cloned())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic noise, with JSON-ish fragments spliced in so the
    /// decoders get past their first checks.
    fn inputs() -> Vec<Vec<u8>> {
        let seeds: [&[u8]; 6] = [
            br#"{"cniVersion":"1.1.0","name":"n","type":"weave-net","ipam":{"subnet":"10.40.0.0/16"}}"#,
            br#"{"cniVersion":"0.4.0","prevResult":{"interfaces":[{"name":"eth0","sandbox":"/x"}],"ips":[{"version":"4","address":"10.0.0.2/8","interface":0}],"routes":[{"dst":"0.0.0.0/0"}],"dns":{}}}"#,
            br#"{"interfaces":[{"name":"a","mtu":1500}],"ips":[{"address":"fd00::1/64","gateway":"fd00::ff","interface":0}],"routes":[{"dst":"::/0","priority":5}]}"#,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"own\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 60\r\n\r\n{\"owned\":[{\"containerid\":\"c\",\"addrs\":[\"10.32.0.1/12\"]}]}",
            b"ADD\0c1\0/run/netns/x\0eth0\0\0/opt/cni/bin",
        ];
        let mut state = 0x9e37_79b9_u32;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        let mut out = Vec::new();
        for n in 0..4000 {
            let seed = seeds[n % seeds.len()];
            let mut data = seed.to_vec();
            let edits = next() % 6;
            for _ in 0..edits {
                if data.is_empty() {
                    break;
                }
                let at = (next() as usize) % data.len();
                match next() % 4 {
                    0 => data[at] = next() as u8,
                    1 => {
                        data.remove(at);
                    }
                    2 => {
                        let alphabet = b"{}[]\":,0123456789abcdef-./\\\r\n";
                        data.insert(at, alphabet[next() as usize % alphabet.len()]);
                    }
                    _ => data.truncate(at),
                }
            }
            if n % 10 == 0 {
                data = (0..(next() % 64)).map(|_| next() as u8).collect();
            }
            out.push(data);
        }
        out
    }

    #[test]
    fn decoders_never_panic_on_noise() {
        for data in inputs() {
            fuzz_config(&data);
            fuzz_result(&data);
            fuzz_http_response(&data);
            fuzz_env(&data);
        }
    }
}
