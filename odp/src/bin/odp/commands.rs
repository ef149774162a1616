//! The verbs, printing what ovs-dpctl prints.

use std::collections::HashMap;
use std::io::Write;

use odp::handle::{DatapathOptions, FlowId, FlowSpec, Ovs};
use odp::text::{self, ParseError, PortNames};
use odp::transport::{Error as OdpError, UpcallSocket};
use odp::wire::datapath::{DatapathAttr, DatapathInfo, UserFeatures};
use odp::wire::flow::{FlowInfo, UfidFlags};
use odp::wire::ovs::ObjCmd;
use odp::wire::packet::PacketCmd;
use odp::wire::vport::{VportInfo, VportType};
use thiserror::Error;

use crate::args::{Cli, Cmd};
use crate::iface::{Iface, type_name};

/// What can make a command fail.
#[derive(Debug, Error)]
pub enum CliError {
    /// The kernel or the transport refused.
    #[error("{0}")]
    Odp(#[from] OdpError),
    /// A flow or action string did not parse.
    #[error("{0}")]
    Parse(#[from] ParseError),
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// Writing the output failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

type Result<T> = std::result::Result<T, CliError>;

/// `system@dp0` and `dp0` name the same kernel datapath.
fn dp_name(s: &str) -> &str {
    s.strip_prefix("system@").unwrap_or(s)
}

fn find_dp(ovs: &mut Ovs, name: Option<&str>) -> Result<DatapathInfo> {
    match name {
        Some(n) => Ok(ovs.datapaths().get(dp_name(n))?),
        None => {
            let mut all = ovs.datapaths().list()?;
            match all.len() {
                1 => Ok(all.remove(0)),
                0 => Err(CliError::Usage("no datapaths exist".into())),
                _ => Err(CliError::Usage(
                    "more than one datapath exists: name one".into(),
                )),
            }
        }
    }
}

fn ports(ovs: &mut Ovs, dp: &DatapathInfo) -> Result<Vec<VportInfo>> {
    let mut v = ovs.vports(dp.dp_ifindex).list()?;
    v.sort_by_key(|p| p.port_no);
    Ok(v)
}

fn port_names(list: &[VportInfo]) -> PortNames {
    list.iter().map(|p| (p.port_no, p.name.clone())).collect()
}

fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid, exclusively
    // borrowed `ts` and reads nothing else.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64) * 1000 + (ts.tv_nsec as u64) / 1_000_000
}

/// One line of dump-flows / get-flow, as `format_dpif_flow` writes it.
pub fn flow_line(f: &FlowInfo, names: Option<&PortNames>, verbose: bool, now: u64) -> String {
    let mut s = String::new();
    if verbose {
        if let Some(u) = &f.ufid {
            s.push_str(&text::format_ufid(u.as_bytes()));
            s.push_str(", ");
        }
    }
    if let Some(k) = &f.key {
        s.push_str(&text::format_flow_key(k, f.mask.as_ref(), names, verbose));
    }
    s.push_str(", ");
    let st = f.stats.unwrap_or_default();
    s.push_str(&text::format_stats(
        st.n_packets,
        st.n_bytes,
        f.used,
        f.tcp_flags,
        now,
    ));
    if verbose {
        s.push_str(", dp:ovs");
    }
    s.push_str(", actions:");
    // Actions left out of a terse reply print as an empty list does.
    let none = Vec::new();
    s.push_str(&text::format_actions(
        f.actions.as_ref().unwrap_or(&none),
        names,
    ));
    s
}

fn human_size(n: u64) -> String {
    const K: f64 = 1024.0;
    let x = n as f64;
    if n >= 1 << 40 {
        format!(" ({:.1} TiB)", x / (K * K * K * K))
    } else if n >= 1 << 30 {
        format!(" ({:.1} GiB)", x / (K * K * K))
    } else if n >= 1 << 20 {
        format!(" ({:.1} MiB)", x / (K * K))
    } else if n >= 1 << 10 {
        format!(" ({:.1} KiB)", x / K)
    } else {
        String::new()
    }
}

fn show_dp(ovs: &mut Ovs, dp: &DatapathInfo, stats: bool, out: &mut impl Write) -> Result<()> {
    writeln!(out, "system@{}:", dp.name)?;
    if let Some(s) = dp.stats {
        writeln!(
            out,
            "  lookups: hit:{} missed:{} lost:{}\n  flows: {}",
            s.n_hit, s.n_missed, s.n_lost, s.n_flows
        )?;
        if let Some(m) = dp.megaflow_stats.filter(|m| m.n_masks != u32::MAX) {
            let pkts = s.n_hit + s.n_missed;
            let avg = if pkts > 0 {
                m.n_mask_hit as f64 / pkts as f64
            } else {
                0.0
            };
            writeln!(
                out,
                "  masks: hit:{} total:{} hit/pkt:{avg:.2}",
                m.n_mask_hit, m.n_masks
            )?;
            // OVS takes a zero cache-hit count for a kernel without the
            // counter and leaves the line out.
            if m.n_cache_hit != 0 && m.n_cache_hit != u64::MAX {
                let rate = if pkts > 0 {
                    m.n_cache_hit as f64 / pkts as f64 * 100.0
                } else {
                    0.0
                };
                writeln!(out, "  cache: hit:{} hit-rate:{rate:.2}%", m.n_cache_hit)?;
            }
        }
    }
    if let Some(size) = dp.masks_cache_size {
        writeln!(out, "  caches:\n    masks-cache: size:{size}")?;
    }
    for p in ports(ovs, dp)? {
        write!(out, "  port {}: {}", p.port_no, p.name)?;
        if p.kind != VportType::Netdev {
            write!(out, " ({}", type_name(p.kind))?;
            // ovs-dpctl prints the configuration of the netdev it opens for
            // the port; a freshly opened tunnel netdev reports only its
            // packet-type mode (checked for vxlan on OVS 3.1), not the
            // kernel vport's UDP port.
            if matches!(
                p.kind,
                VportType::Vxlan | VportType::Geneve | VportType::Gre
            ) {
                write!(out, ": packet_type=ptap")?;
            }
            write!(out, ")")?;
        }
        writeln!(out)?;
        if stats {
            let s = p.stats.unwrap_or_default();
            writeln!(
                out,
                "    RX packets:{} errors:{} dropped:{} overruns:? frame:?",
                s.rx_packets, s.rx_errors, s.rx_dropped
            )?;
            writeln!(
                out,
                "    TX packets:{} errors:{} dropped:{} aborted:? carrier:?",
                s.tx_packets, s.tx_errors, s.tx_dropped
            )?;
            writeln!(out, "    collisions:?")?;
            writeln!(
                out,
                "    RX bytes:{}{}  TX bytes:{}{}",
                s.rx_bytes,
                human_size(s.rx_bytes),
                s.tx_bytes,
                human_size(s.tx_bytes)
            )?;
        }
    }
    Ok(())
}

fn add_ifs(ovs: &mut Ovs, dp: &DatapathInfo, ifaces: &[String]) -> Result<()> {
    for arg in ifaces {
        let i = Iface::parse(arg).map_err(CliError::Usage)?;
        if i.upcall_pid.is_some() {
            return Err(CliError::Usage(format!(
                "{}: upcall_pid is for set-if",
                i.name
            )));
        }
        for k in &i.ignored {
            eprintln!(
                "odp: {}: option {k:?} ignored (the kernel datapath has no place for it)",
                i.name
            );
        }
        let spec = i.spec().map_err(CliError::Usage)?;
        ovs.vports(dp.dp_ifindex).create(&spec)?;
    }
    Ok(())
}

/// Splits `[DP] REST...` where REST has `n` items.
fn split_dp(args: &[String], n: usize) -> (Option<&str>, &[String]) {
    if args.len() > n {
        (
            args.first().map(String::as_str),
            args.get(1..).unwrap_or(&[]),
        )
    } else {
        (None, args)
    }
}

fn arg(args: &[String], i: usize) -> Result<&str> {
    args.get(i)
        .map(String::as_str)
        .ok_or_else(|| CliError::Usage("missing argument".into()))
}

fn flow_spec(ovs: &mut Ovs, dp: &DatapathInfo, flow: &str, acts: &str) -> Result<FlowSpec> {
    let names = port_names(&ports(ovs, dp)?);
    let by_name: HashMap<&str, u32> = names.iter().map(|(n, s)| (s.as_str(), *n)).collect();
    let lookup = |s: &str| by_name.get(s).copied();
    let parsed = text::parse_flow(flow, Some(&lookup))?;
    let actions = text::parse_actions(acts, Some(&lookup))?;
    let mut spec = FlowSpec::new(parsed.key, actions).with_mask(parsed.mask);
    spec.ufid = parsed.ufid;
    Ok(spec)
}

fn flow_id(ovs: &mut Ovs, dp: &DatapathInfo, flow: &str) -> Result<FlowId> {
    let t = flow.trim();
    if t.starts_with("ufid:") && !t.contains('(') {
        return Ok(FlowId::Ufid(text::parse_ufid(t)?));
    }
    let names = port_names(&ports(ovs, dp)?);
    let by_name: HashMap<&str, u32> = names.iter().map(|(n, s)| (s.as_str(), *n)).collect();
    let lookup = |s: &str| by_name.get(s).copied();
    let parsed = text::parse_flow(flow, Some(&lookup))?;
    Ok(match parsed.ufid {
        Some(u) => FlowId::Ufid(u),
        None => FlowId::Key(parsed.key),
    })
}

/// Runs one command, writing its output to `out`.
pub fn run(cli: &Cli, out: &mut impl Write) -> Result<()> {
    let mut ovs = Ovs::connect()?;
    let verbose = cli.more > 0;
    match &cli.cmd {
        Cmd::Show { dps } => {
            let list = if dps.is_empty() {
                let mut all = ovs.datapaths().list()?;
                all.sort_by(|a, b| a.name.cmp(&b.name));
                all
            } else {
                let mut v = Vec::new();
                for d in dps {
                    v.push(ovs.datapaths().get(dp_name(d))?);
                }
                v
            };
            for dp in list {
                show_dp(&mut ovs, &dp, cli.statistics, out)?;
            }
        }
        Cmd::DumpDps => {
            let mut all = ovs.datapaths().list()?;
            all.sort_by(|a, b| a.name.cmp(&b.name));
            for dp in all {
                writeln!(out, "system@{}", dp.name)?;
            }
        }
        Cmd::AddDp { dp, ifaces } => {
            let info = ovs
                .datapaths()
                .create(dp_name(dp), &DatapathOptions::default())?;
            add_ifs(&mut ovs, &info, ifaces)?;
        }
        Cmd::DelDp { dp } => ovs.datapaths().delete(dp_name(dp))?,
        Cmd::AddIf { dp, ifaces } => {
            let info = ovs.datapaths().get(dp_name(dp))?;
            add_ifs(&mut ovs, &info, ifaces)?;
        }
        Cmd::SetIf { dp, ifaces } => {
            let info = ovs.datapaths().get(dp_name(dp))?;
            for a in ifaces {
                let i = Iface::parse(a).map_err(CliError::Usage)?;
                let cur = ovs.vports(info.dp_ifindex).get(&i.name)?;
                if let Some(k) = i.kind {
                    if k != cur.kind {
                        return Err(CliError::Usage(format!(
                            "{}: can't change type from {} to {}",
                            i.name,
                            type_name(cur.kind),
                            type_name(k)
                        )));
                    }
                }
                if let Some(p) = i.port_no {
                    if p != cur.port_no {
                        return Err(CliError::Usage(format!(
                            "{}: can't change port number from {} to {p}",
                            i.name, cur.port_no
                        )));
                    }
                }
                if i.dst_port.is_some_and(|p| Some(p) != cur.dst_port()) || i.gbp {
                    return Err(CliError::Usage(format!(
                        "{}: tunnel options of a kernel vport are fixed at creation",
                        i.name
                    )));
                }
                for k in &i.ignored {
                    eprintln!(
                        "odp: {}: option {k:?} ignored (the kernel datapath has no place for it)",
                        i.name
                    );
                }
                if let Some(pid) = i.upcall_pid {
                    ovs.vports(info.dp_ifindex)
                        .set_upcall_pids(&i.name, vec![pid])?;
                }
            }
        }
        Cmd::DelIf { dp, ifaces } => {
            let info = ovs.datapaths().get(dp_name(dp))?;
            for name in ifaces {
                ovs.vports(info.dp_ifindex).delete(name)?;
            }
        }
        Cmd::DumpFlows { dp, terse } => {
            let info = find_dp(&mut ovs, dp.as_deref())?;
            let names = if cli.use_names() {
                Some(port_names(&ports(&mut ovs, &info)?))
            } else {
                None
            };
            let flags = if *terse {
                UfidFlags::TERSE
            } else {
                UfidFlags(0)
            };
            let now = now_ms();
            let mut lines = Vec::new();
            ovs.flows(info.dp_ifindex).dump_each(flags, |f| {
                lines.push(flow_line(&f, names.as_ref(), verbose, now));
                Ok(())
            })?;
            for l in lines {
                writeln!(out, "{l}")?;
            }
        }
        Cmd::AddFlow { args } => {
            let (dp, rest) = split_dp(args, 2);
            let info = find_dp(&mut ovs, dp)?;
            let spec = flow_spec(&mut ovs, &info, arg(rest, 0)?, arg(rest, 1)?)?;
            ovs.flows(info.dp_ifindex).create(&spec)?;
        }
        Cmd::ModFlow {
            args, may_create, ..
        } => {
            let (dp, rest) = split_dp(args, 2);
            let info = find_dp(&mut ovs, dp)?;
            let spec = flow_spec(&mut ovs, &info, arg(rest, 0)?, arg(rest, 1)?)?;
            match ovs.flows(info.dp_ifindex).modify(&spec) {
                Err(OdpError::NotFound { .. }) if *may_create => {
                    ovs.flows(info.dp_ifindex).create(&spec)?
                }
                r => r?,
            }
        }
        Cmd::GetFlow { args } => {
            let (dp, rest) = split_dp(args, 1);
            let info = find_dp(&mut ovs, dp)?;
            let id = flow_id(&mut ovs, &info, arg(rest, 0)?)?;
            let names = if cli.use_names() {
                Some(port_names(&ports(&mut ovs, &info)?))
            } else {
                None
            };
            let f = ovs.flows(info.dp_ifindex).get(&id)?;
            writeln!(out, "{}", flow_line(&f, names.as_ref(), verbose, now_ms()))?;
        }
        Cmd::DelFlow { args } => {
            let (dp, rest) = split_dp(args, 1);
            let info = find_dp(&mut ovs, dp)?;
            let id = flow_id(&mut ovs, &info, arg(rest, 0)?)?;
            ovs.flows(info.dp_ifindex).delete(&id)?;
        }
        Cmd::DelFlows { dp } => {
            let info = find_dp(&mut ovs, dp.as_deref())?;
            ovs.flows(info.dp_ifindex).flush()?;
        }
        Cmd::Listen {
            dp,
            no_upcalls,
            count,
        } => listen(&mut ovs, dp.as_deref(), *no_upcalls, *count, out)?,
    }
    out.flush()?;
    Ok(())
}

fn vport_event_line(m: &odp::wire::vport::VportMessage) -> String {
    let what = match m.cmd {
        ObjCmd::New => "new",
        ObjCmd::Del => "del",
        ObjCmd::Set => "set",
        ObjCmd::Get => "get",
        ObjCmd::Other(_) => "other",
    };
    match VportInfo::from_message(m) {
        Ok(p) => format!(
            "vport {what}: dp_ifindex {} port {}: {} ({})",
            m.dp_ifindex,
            p.port_no,
            p.name,
            type_name(p.kind)
        ),
        Err(e) => format!("vport {what}: undecodable ({e})"),
    }
}

/// Prints vport events (and, with a datapath, its upcalls) until `count`
/// events have been printed, or forever.
fn listen(
    ovs: &mut Ovs,
    dp: Option<&str>,
    no_upcalls: bool,
    count: Option<u64>,
    out: &mut impl Write,
) -> Result<()> {
    let vport_family = ovs.vport_family();
    let packet_family = ovs.packet_family();
    let mut events = ovs.vport_events()?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();

    let vtx = tx.clone();
    std::thread::spawn(move || {
        loop {
            match events.recv_raw(vport_family) {
                Ok(bodies) => {
                    for b in bodies {
                        let line = match odp::wire::vport::VportMessage::decode(&b) {
                            Ok(m) => vport_event_line(&m),
                            Err(e) => format!("vport event: undecodable ({e})"),
                        };
                        if vtx.send(line).is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    let _ = vtx.send(format!("vport events: {e}"));
                }
            }
        }
    });

    if let (Some(name), false) = (dp, no_upcalls) {
        let info = ovs.datapaths().get(dp_name(name))?;
        let mut sock = UpcallSocket::open()?;
        let pid = sock.pid();
        let per_cpu = info
            .user_features
            .is_some_and(|f| f.contains(UserFeatures::DISPATCH_UPCALL_PER_CPU));
        if per_cpu {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get());
            let cpus = std::fs::read_to_string("/sys/devices/system/cpu/possible")
                .ok()
                .and_then(|s| possible_cpus(&s))
                .unwrap_or(n);
            // A SET without USER_FEATURES resets them to zero (and with
            // them per-CPU dispatch): send the current ones back.
            let features = info.user_features.unwrap_or_default();
            ovs.datapaths().set(
                &info.name,
                vec![
                    DatapathAttr::UserFeatures(features),
                    DatapathAttr::PerCpuPids(vec![pid; cpus]),
                ],
            )?;
        } else {
            for p in ports(ovs, &info)? {
                ovs.vports(info.dp_ifindex)
                    .set_upcall_pids(&p.name, vec![pid])?;
            }
        }
        eprintln!(
            "odp: upcalls of {} now come to this program (pid {pid})",
            info.name
        );
        let names = port_names(&ports(ovs, &info)?);
        std::thread::spawn(move || {
            loop {
                match sock.recv_upcalls(packet_family) {
                    Ok(ups) => {
                        for u in ups {
                            let kind = match u.cmd {
                                PacketCmd::Miss => "miss",
                                PacketCmd::Action => "action",
                                _ => "upcall",
                            };
                            let mut line = format!(
                                "{kind}: {}, len:{}",
                                text::format_flow_key(&u.key, None, Some(&names), false),
                                u.packet.len()
                            );
                            if let Some(d) = &u.userdata {
                                line.push_str(", userdata(");
                                for b in d {
                                    line.push_str(&format!("{b:02x}"));
                                }
                                line.push(')');
                            }
                            if tx.send(line).is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(format!("upcalls: {e}"));
                    }
                }
            }
        });
    } else {
        drop(tx);
    }

    if count == Some(0) {
        return Ok(());
    }
    for (n, line) in (1u64..).zip(rx) {
        writeln!(out, "{line}")?;
        out.flush()?;
        if count.is_some_and(|c| n >= c) {
            break;
        }
    }
    Ok(())
}

/// The number of CPU ids in `/sys/devices/system/cpu/possible` (`0-3,5`).
fn possible_cpus(s: &str) -> Option<usize> {
    let mut max = None;
    for part in s.trim().split(',') {
        let hi = part.rsplit('-').next()?.parse::<usize>().ok()?;
        max = Some(max.map_or(hi, |m: usize| m.max(hi)));
    }
    max.map(|m| m + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use odp::wire::action::Action;
    use odp::wire::flow::{FlowStats, Ufid};
    use odp::wire::key::{FlowKey, KeyAttr};

    #[test]
    fn flow_lines_look_like_ovs_dpctl() {
        let f = FlowInfo {
            key: Some(FlowKey::new().with(KeyAttr::InPort(1))),
            mask: Some(FlowKey::new().with(KeyAttr::InPort(u32::MAX))),
            actions: Some(vec![Action::Output(2)]),
            stats: Some(FlowStats {
                n_packets: 3,
                n_bytes: 294,
            }),
            used: Some(9_000),
            ufid: Some(Ufid::from_u128(1)),
            ..Default::default()
        };
        assert_eq!(
            flow_line(&f, None, false, 10_500),
            "in_port(1), packets:3, bytes:294, used:1.500s, actions:2"
        );
        let mut names = PortNames::new();
        names.insert(2, "veth1".into());
        let line = flow_line(&f, Some(&names), true, 10_500);
        assert!(line.starts_with("ufid:"), "{line}");
        assert!(
            line.ends_with(
                ", in_port(1), packets:3, bytes:294, used:1.500s, dp:ovs, actions:veth1"
            ),
            "{line}"
        );
        let empty = FlowInfo::default();
        assert_eq!(
            flow_line(&empty, None, false, 0),
            ", packets:0, bytes:0, used:never, actions:drop"
        );
    }

    #[test]
    fn helpers() {
        assert_eq!(possible_cpus("0-3\n"), Some(4));
        assert_eq!(possible_cpus("0"), Some(1));
        assert_eq!(possible_cpus("0-1,4-7"), Some(8));
        assert_eq!(human_size(512), "");
        assert_eq!(human_size(2048), " (2.0 KiB)");
        assert_eq!(dp_name("system@dp0"), "dp0");
        let a = vec!["dp".to_owned(), "f".to_owned(), "a".to_owned()];
        assert_eq!(split_dp(&a, 2).0, Some("dp"));
        assert_eq!(split_dp(&a[1..], 2).0, None);
    }
}
