//! Enforcement: [`Batch`]es applied to the kernel as nf_tables netlink
//! transactions, in table `ip weave-npc`.
//!
//! **Why our own encoder over netlink-sys.** We need hash sets keyed by
//! address, interval sets (ipBlock minus except), a concatenated
//! address . protocol . port set (named ports resolved per pod), negated
//! lookups, conntrack state, interface names, jumps, and one transaction per
//! batch. `rustables` (the maintained Rust nftables crate) covers tables,
//! chains, rules and simple sets but not concatenated keys, and `nftables`
//! (JSON) runs the `nft` program per update, which is what this controller
//! exists to avoid. The subset of the nf_tables netlink protocol we use is
//! small (about a dozen message and expression kinds), stable since Linux
//! 4.x, and is written here over the workspace's `netlink-sys` socket.
//!
//! **Why br_netfilter, not the bridge family.** Pod-to-pod traffic, on one
//! node and (through the router's bridge port) across nodes, is bridged by
//! `weave`. A `bridge` family table would see it without br_netfilter, but
//! stateful matching there needs `nf_conntrack_bridge`, which not every
//! kernel ships (this project's test hosts lack it: a `ct state` rule in a
//! bridge table fails with EPROTO), and without conntrack replies to allowed
//! connections would be judged as new traffic. Weave's DaemonSet already
//! loads br_netfilter and sets `bridge-nf-call-iptables=1`, so bridged IPv4
//! passes the `ip` family's forward hook with the bridge as input/output
//! interface, where conntrack works everywhere. We therefore hook `ip`
//! forward and input, and [`bridge_nf_call_iptables`] lets the shell refuse
//! to run (fail closed) when the sysctl is off.
//!
//! **Atomic start.** A reset batch is `add table; delete table; add table;
//! …everything…` in one transaction: the old ruleset is replaced by the new
//! one in a single commit, with no window where rules are flushed.

use std::collections::BTreeMap;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};

use crate::model::{Batch, ChainDef, Elem, Hook, Match, Op, Rule, SetKind, Verdict};

/// Our table's name (family `ip`).
pub const TABLE: &str = "weave-npc";

const NFPROTO_IPV4: u8 = 2;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NLMSG_ERROR: u16 = 2;

const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_DELSET: u16 = 11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_DELSETELEM: u16 = 14;
const NLMSG_DONE: u16 = 3;
const NLM_F_DUMP: u16 = 0x300;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;

// Attribute numbers (linux/netfilter/nf_tables.h).
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFTA_LOOKUP_SET: u16 = 1;
const NFTA_LOOKUP_SREG: u16 = 2;
const NFTA_LOOKUP_SET_ID: u16 = 4;
const NFTA_LOOKUP_FLAGS: u16 = 5;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
const NFTA_BITWISE_SREG: u16 = 1;
const NFTA_BITWISE_DREG: u16 = 2;
const NFTA_BITWISE_LEN: u16 = 3;
const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_BITWISE_XOR: u16 = 5;

const NFTA_LOG_GROUP: u16 = 1;
const NFTA_LOG_PREFIX: u16 = 2;
const NFT_SET_INTERVAL: u32 = 0x4;
const NFT_SET_ELEM_INTERVAL_END: u32 = 0x1;
const NFT_LOOKUP_F_INV: u32 = 0x1;
const NFT_META_IIFNAME: u32 = 6;
const NFT_META_OIFNAME: u32 = 7;
const NFT_META_L4PROTO: u32 = 16;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFT_CMP_LTE: u32 = 3;
const NFT_CMP_GTE: u32 = 5;
const NFT_CT_STATE: u32 = 0;
const NF_CT_STATE_ESTABLISHED: u32 = 1 << 1;
const NF_CT_STATE_RELATED: u32 = 1 << 2;
const NF_DROP: i32 = 0;
const NF_ACCEPT: i32 = 1;
const NFT_JUMP: i32 = -3;
const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFT_REG32_00: u32 = 8;
const NF_INET_LOCAL_IN: u32 = 1;
const NF_INET_FORWARD: u32 = 2;
// nft's data type ids, so `nft list ruleset` can print our sets.
const TYPE_IPADDR: u32 = 7;
const TYPE_INET_PROTOCOL: u32 = 12;
const TYPE_INET_SERVICE: u32 = 13;
/// Elements per set-element message, to keep messages well under 64 KiB.
const ELEMS_PER_MSG: usize = 256;

/// A failed transaction or socket operation.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The netlink socket failed.
    #[error("nf_tables netlink socket: {0}")]
    Io(#[from] io::Error),
    /// The kernel refused the transaction (nothing of it was applied).
    #[error("nf_tables refused {what}: {source}")]
    Refused {
        /// The message it refused.
        what: String,
        /// The errno.
        source: io::Error,
    },
    /// The kernel did not answer every message.
    #[error("nf_tables answered {got} of {want} messages")]
    Incomplete {
        /// Answers received.
        got: usize,
        /// Messages sent.
        want: usize,
    },
}

/// Builds one netlink message.
struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Msg {
    fn new(ty: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> Msg {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched in finish
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
        buf.push(family);
        buf.push(0); // NFNETLINK_V0
        buf.extend_from_slice(&res_id.to_be_bytes());
        Msg {
            buf,
            nests: Vec::new(),
        }
    }

    fn put(&mut self, ty: u16, data: &[u8]) -> &mut Msg {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    fn pad(&mut self) {
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }

    fn str(&mut self, ty: u16, s: &str) -> &mut Msg {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.put(ty, &v)
    }

    fn u32(&mut self, ty: u16, v: u32) -> &mut Msg {
        self.put(ty, &v.to_be_bytes())
    }

    fn begin(&mut self, ty: u16) -> &mut Msg {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        self
    }

    fn end(&mut self) -> &mut Msg {
        if let Some(start) = self.nests.pop() {
            let len = (self.buf.len() - start) as u16;
            self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }

    /// An expression list entry: name and its attributes.
    fn expr(&mut self, name: &str, attrs: impl FnOnce(&mut Msg)) -> &mut Msg {
        self.begin(NFTA_LIST_ELEM);
        self.str(NFTA_EXPR_NAME, name);
        self.begin(NFTA_EXPR_DATA);
        attrs(self);
        self.end();
        self.end()
    }

    fn data(&mut self, ty: u16, value: &[u8]) -> &mut Msg {
        self.begin(ty);
        self.put(NFTA_DATA_VALUE, value);
        self.end()
    }
}

/// Encodes batches into nf_tables messages.
struct Encoder {
    msgs: Vec<Vec<u8>>,
    what: Vec<String>,
    seq: u32,
    /// Sets created in this batch → their batch-local ids.
    new_sets: BTreeMap<String, u32>,
}

impl Encoder {
    fn new(seq: u32) -> Encoder {
        Encoder {
            msgs: Vec::new(),
            what: Vec::new(),
            seq,
            new_sets: BTreeMap::new(),
        }
    }

    fn msg(&mut self, ty: u16, flags: u16, what: String, body: impl FnOnce(&mut Msg)) {
        self.seq = self.seq.wrapping_add(1);
        let mut m = Msg::new(
            (NFNL_SUBSYS_NFTABLES << 8) | ty,
            NLM_F_REQUEST | NLM_F_ACK | flags,
            self.seq,
            NFPROTO_IPV4,
            0,
        );
        body(&mut m);
        self.msgs.push(m.finish());
        self.what.push(what);
    }

    fn table(&mut self, ty: u16, flags: u16) {
        self.msg(ty, flags, format!("table {TABLE}"), |m| {
            m.str(NFTA_TABLE_NAME, TABLE);
        });
    }

    fn op(&mut self, op: &Op) {
        match op {
            Op::AddSet(name, kind) => {
                let id = self.new_sets.len() as u32 + 1;
                self.new_sets.insert(name.clone(), id);
                let (flags, key_type, key_len) = match kind {
                    SetKind::Addr => (0, TYPE_IPADDR, 4),
                    SetKind::AddrRanges => (NFT_SET_INTERVAL, TYPE_IPADDR, 4),
                    SetKind::AddrProtoPort => (
                        0,
                        (((TYPE_IPADDR << 6) | TYPE_INET_PROTOCOL) << 6) | TYPE_INET_SERVICE,
                        12,
                    ),
                };
                self.msg(
                    NFT_MSG_NEWSET,
                    NLM_F_CREATE | NLM_F_EXCL,
                    format!("add set {name}"),
                    |m| {
                        m.str(NFTA_SET_TABLE, TABLE)
                            .str(NFTA_SET_NAME, name)
                            .u32(NFTA_SET_FLAGS, flags)
                            .u32(NFTA_SET_KEY_TYPE, key_type)
                            .u32(NFTA_SET_KEY_LEN, key_len)
                            .u32(NFTA_SET_ID, id);
                    },
                );
            }
            Op::DelSet(name) => self.msg(NFT_MSG_DELSET, 0, format!("delete set {name}"), |m| {
                m.str(NFTA_SET_TABLE, TABLE).str(NFTA_SET_NAME, name);
            }),
            Op::AddElems(set, elems) | Op::DelElems(set, elems) => {
                let add = matches!(op, Op::AddElems(..));
                let (ty, flags, verb) = if add {
                    (NFT_MSG_NEWSETELEM, NLM_F_CREATE, "add")
                } else {
                    (NFT_MSG_DELSETELEM, 0, "delete")
                };
                let set_id = self.new_sets.get(set).copied();
                for chunk in elems.chunks(ELEMS_PER_MSG) {
                    self.msg(
                        ty,
                        flags,
                        format!("{verb} elements of {set}: {chunk:?}"),
                        |m| {
                            m.str(NFTA_SET_ELEM_LIST_TABLE, TABLE)
                                .str(NFTA_SET_ELEM_LIST_SET, set);
                            if let Some(id) = set_id {
                                m.u32(NFTA_SET_ELEM_LIST_SET_ID, id);
                            }
                            m.begin(NFTA_SET_ELEM_LIST_ELEMENTS);
                            for e in chunk {
                                for (key, end) in elem_keys(e) {
                                    m.begin(NFTA_LIST_ELEM);
                                    m.data(NFTA_SET_ELEM_KEY, &key);
                                    if end {
                                        m.u32(NFTA_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
                                    }
                                    m.end();
                                }
                            }
                            m.end();
                        },
                    );
                }
            }
            Op::AddChain(ChainDef { name, base }) => {
                self.msg(
                    NFT_MSG_NEWCHAIN,
                    NLM_F_CREATE | NLM_F_EXCL,
                    format!("add chain {name}"),
                    |m| {
                        m.str(NFTA_CHAIN_TABLE, TABLE).str(NFTA_CHAIN_NAME, name);
                        if let Some((hook, prio)) = base {
                            let num = match hook {
                                Hook::Input => NF_INET_LOCAL_IN,
                                Hook::Forward => NF_INET_FORWARD,
                            };
                            m.begin(NFTA_CHAIN_HOOK)
                                .u32(NFTA_HOOK_HOOKNUM, num)
                                .u32(NFTA_HOOK_PRIORITY, *prio as u32)
                                .end();
                            m.u32(NFTA_CHAIN_POLICY, NF_ACCEPT as u32)
                                .str(NFTA_CHAIN_TYPE, "filter");
                        }
                    },
                );
            }
            Op::DelChain(name) => {
                self.msg(NFT_MSG_DELCHAIN, 0, format!("delete chain {name}"), |m| {
                    m.str(NFTA_CHAIN_TABLE, TABLE).str(NFTA_CHAIN_NAME, name);
                })
            }
            Op::SetRules(chain, rules) => {
                self.msg(NFT_MSG_DELRULE, 0, format!("flush chain {chain}"), |m| {
                    m.str(NFTA_RULE_TABLE, TABLE).str(NFTA_RULE_CHAIN, chain);
                });
                for rule in rules {
                    let new_sets = self.new_sets.clone();
                    self.msg(
                        NFT_MSG_NEWRULE,
                        NLM_F_CREATE | NLM_F_APPEND,
                        format!("rule in {chain}: {rule:?}"),
                        |m| {
                            m.str(NFTA_RULE_TABLE, TABLE).str(NFTA_RULE_CHAIN, chain);
                            m.begin(NFTA_RULE_EXPRESSIONS);
                            encode_rule(m, chain, rule, &new_sets);
                            m.end();
                        },
                    );
                }
            }
        }
    }
}

/// The key(s) of an element: an interval is a start and an end-after key.
fn elem_keys(e: &Elem) -> Vec<(Vec<u8>, bool)> {
    match e {
        Elem::Addr(a) => vec![(a.octets().to_vec(), false)],
        Elem::Range(lo, hi) => {
            let mut v = vec![(lo.octets().to_vec(), false)];
            // An interval reaching 255.255.255.255 has no end key: it runs
            // to the end of the address space.
            if let Some(after) = u32::from(*hi).checked_add(1) {
                v.push((Ipv4Addr::from(after).octets().to_vec(), true));
            }
            v
        }
        Elem::AddrProtoPort(a, proto, port) => {
            let mut k = a.octets().to_vec();
            k.extend_from_slice(&[*proto, 0, 0, 0]);
            k.extend_from_slice(&port.to_be_bytes());
            k.extend_from_slice(&[0, 0]);
            vec![(k, false)]
        }
    }
}

fn payload(m: &mut Msg, dreg: u32, base: u32, offset: u32, len: u32) {
    m.expr("payload", |m| {
        m.u32(NFTA_PAYLOAD_DREG, dreg)
            .u32(NFTA_PAYLOAD_BASE, base)
            .u32(NFTA_PAYLOAD_OFFSET, offset)
            .u32(NFTA_PAYLOAD_LEN, len);
    });
}

fn meta(m: &mut Msg, dreg: u32, key: u32) {
    m.expr("meta", |m| {
        m.u32(NFTA_META_DREG, dreg).u32(NFTA_META_KEY, key);
    });
}

fn cmp(m: &mut Msg, op: u32, value: &[u8]) {
    m.expr("cmp", |m| {
        m.u32(NFTA_CMP_SREG, NFT_REG_1).u32(NFTA_CMP_OP, op);
        m.data(NFTA_CMP_DATA, value);
    });
}

fn lookup(m: &mut Msg, set: &str, sreg: u32, negate: bool, new_sets: &BTreeMap<String, u32>) {
    m.expr("lookup", |m| {
        m.str(NFTA_LOOKUP_SET, set).u32(NFTA_LOOKUP_SREG, sreg);
        if let Some(id) = new_sets.get(set) {
            m.u32(NFTA_LOOKUP_SET_ID, *id);
        }
        if negate {
            m.u32(NFTA_LOOKUP_FLAGS, NFT_LOOKUP_F_INV);
        }
    });
}

fn ifname(name: &str) -> [u8; 16] {
    let mut v = [0u8; 16];
    let n = name.len().min(15);
    v[..n].copy_from_slice(&name.as_bytes()[..n]);
    v
}

fn encode_rule(m: &mut Msg, chain: &str, rule: &Rule, new_sets: &BTreeMap<String, u32>) {
    for mt in &rule.matches {
        match mt {
            Match::CtEstablished => {
                m.expr("ct", |m| {
                    m.u32(NFTA_CT_DREG, NFT_REG_1)
                        .u32(NFTA_CT_KEY, NFT_CT_STATE);
                });
                m.expr("bitwise", |m| {
                    m.u32(NFTA_BITWISE_SREG, NFT_REG_1)
                        .u32(NFTA_BITWISE_DREG, NFT_REG_1)
                        .u32(NFTA_BITWISE_LEN, 4);
                    m.data(
                        NFTA_BITWISE_MASK,
                        &(NF_CT_STATE_ESTABLISHED | NF_CT_STATE_RELATED).to_ne_bytes(),
                    );
                    m.data(NFTA_BITWISE_XOR, &0u32.to_ne_bytes());
                });
                cmp(m, NFT_CMP_NEQ, &0u32.to_ne_bytes());
            }
            Match::IifName(n) | Match::OifName(n) => {
                let key = if matches!(mt, Match::IifName(_)) {
                    NFT_META_IIFNAME
                } else {
                    NFT_META_OIFNAME
                };
                meta(m, NFT_REG_1, key);
                cmp(m, NFT_CMP_EQ, &ifname(n));
            }
            Match::Saddr { set, negate } | Match::Daddr { set, negate } => {
                let offset = if matches!(mt, Match::Saddr { .. }) {
                    12
                } else {
                    16
                };
                payload(m, NFT_REG_1, NFT_PAYLOAD_NETWORK_HEADER, offset, 4);
                lookup(m, set, NFT_REG_1, *negate, new_sets);
            }
            Match::L4Proto(p) => {
                meta(m, NFT_REG_1, NFT_META_L4PROTO);
                cmp(m, NFT_CMP_EQ, &[*p]);
            }
            Match::Dport(lo, hi) => {
                payload(m, NFT_REG_1, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2);
                if lo == hi {
                    cmp(m, NFT_CMP_EQ, &lo.to_be_bytes());
                } else {
                    cmp(m, NFT_CMP_GTE, &lo.to_be_bytes());
                    cmp(m, NFT_CMP_LTE, &hi.to_be_bytes());
                }
            }
            Match::DaddrProtoDport(set) => {
                payload(m, NFT_REG32_00, NFT_PAYLOAD_NETWORK_HEADER, 16, 4);
                meta(m, NFT_REG32_00 + 1, NFT_META_L4PROTO);
                payload(m, NFT_REG32_00 + 2, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2);
                lookup(m, set, NFT_REG32_00, false, new_sets);
            }
        }
    }
    if rule.verdict == Verdict::Drop {
        // Dropped packets go to NFLOG, where the controller reads them.
        m.expr("log", |m| {
            m.put(NFTA_LOG_GROUP, &crate::nflog::GROUP.to_be_bytes())
                .str(NFTA_LOG_PREFIX, &format!("weave-npc {chain}"));
        });
        m.expr("counter", |_| {});
    }
    m.expr("immediate", |m| {
        m.u32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
        m.begin(NFTA_IMMEDIATE_DATA).begin(NFTA_DATA_VERDICT);
        match &rule.verdict {
            Verdict::Accept => {
                m.u32(NFTA_VERDICT_CODE, NF_ACCEPT as u32);
            }
            Verdict::Drop => {
                m.u32(NFTA_VERDICT_CODE, NF_DROP as u32);
            }
            Verdict::Jump(chain) => {
                m.u32(NFTA_VERDICT_CODE, NFT_JUMP as u32)
                    .str(NFTA_VERDICT_CHAIN, chain);
            }
        }
        m.end().end();
    });
}

/// An nf_tables netlink socket in the network namespace it was opened in.
pub struct Enforcer {
    sock: Socket,
    seq: u32,
}

impl Enforcer {
    /// Opens the socket (in the calling thread's network namespace).
    pub fn open() -> Result<Enforcer, NftError> {
        let mut sock = Socket::new(NETLINK_NETFILTER)?;
        sock.bind_auto()?;
        let fd = sock.as_raw_fd();
        let timeout = libc::timeval {
            tv_sec: 10,
            tv_usec: 0,
        };
        let big: libc::c_int = 8 << 20;
        // SAFETY: fd is our open socket; the option values are plain
        // integers/structs of the sizes passed.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error().into());
        }
        for opt in [libc::SO_SNDBUFFORCE, libc::SO_RCVBUFFORCE] {
            // SAFETY: as above. Failure (no CAP_NET_ADMIN) leaves the
            // default buffers, which only limits batch size.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    opt,
                    (&big as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        Ok(Enforcer { sock, seq })
    }

    /// Applies a batch as one transaction: all of it, or (on error) none.
    pub fn apply(&mut self, batch: &Batch) -> Result<(), NftError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut enc = Encoder::new(self.seq);
        if batch.reset {
            enc.table(NFT_MSG_NEWTABLE, NLM_F_CREATE);
            enc.table(NFT_MSG_DELTABLE, 0);
            enc.table(NFT_MSG_NEWTABLE, NLM_F_CREATE | NLM_F_EXCL);
        }
        for op in &batch.ops {
            enc.op(op);
        }
        self.commit(enc)
    }

    /// Removes our table and everything in it (uninstall); no error if absent.
    pub fn remove_all(&mut self) -> Result<(), NftError> {
        let mut enc = Encoder::new(self.seq);
        enc.table(NFT_MSG_NEWTABLE, NLM_F_CREATE);
        enc.table(NFT_MSG_DELTABLE, 0);
        self.commit(enc)
    }

    fn commit(&mut self, enc: Encoder) -> Result<(), NftError> {
        let Encoder {
            msgs, what, seq, ..
        } = enc;
        let first = self.seq.wrapping_add(1);
        self.seq = seq.wrapping_add(1);
        let mut buf = Msg::new(
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            first,
            0,
            NFNL_SUBSYS_NFTABLES,
        )
        .finish();
        for m in &msgs {
            buf.extend_from_slice(m);
        }
        buf.extend_from_slice(
            &Msg::new(
                NFNL_MSG_BATCH_END,
                NLM_F_REQUEST,
                self.seq,
                0,
                NFNL_SUBSYS_NFTABLES,
            )
            .finish(),
        );
        self.sock.send(&buf, 0)?;
        let want = msgs.len();
        let mut got = 0;
        let mut refused = None;
        while got < want {
            let (data, _) = match self.sock.recv_from_full() {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            };
            let mut rest = &data[..];
            while rest.len() >= 16 {
                let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let ty = u16::from_ne_bytes([rest[4], rest[5]]);
                if len < 16 || len > rest.len() {
                    break;
                }
                if ty == NLMSG_ERROR && len >= 20 {
                    got += 1;
                    let errno = i32::from_ne_bytes([rest[16], rest[17], rest[18], rest[19]]);
                    let seq = if len >= 32 {
                        u32::from_ne_bytes([rest[28], rest[29], rest[30], rest[31]])
                    } else {
                        0
                    };
                    if errno != 0 && refused.is_none() {
                        let idx = seq.wrapping_sub(first).wrapping_sub(1) as usize;
                        refused = Some((
                            what.get(idx)
                                .cloned()
                                .unwrap_or_else(|| format!("message {seq}")),
                            io::Error::from_raw_os_error(-errno),
                        ));
                    }
                }
                rest = &rest[len.div_ceil(4) * 4..];
            }
            if refused.is_some() && got < want {
                // The kernel aborted; it may not answer the rest.
                continue;
            }
        }
        if let Some((what, source)) = refused {
            return Err(NftError::Refused { what, source });
        }
        if got < want {
            return Err(NftError::Incomplete { got, want });
        }
        Ok(())
    }
}

impl Enforcer {
    /// The elements the kernel holds in our set `set` of kind `kind` (a
    /// dump); `None` if the set does not exist.
    pub fn set_elements(
        &mut self,
        set: &str,
        kind: SetKind,
    ) -> Result<Option<std::collections::BTreeSet<Elem>>, NftError> {
        self.seq = self.seq.wrapping_add(1);
        let mut m = Msg::new(
            (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETSETELEM,
            NLM_F_REQUEST | NLM_F_DUMP,
            self.seq,
            NFPROTO_IPV4,
            0,
        );
        m.str(NFTA_SET_ELEM_LIST_TABLE, TABLE)
            .str(NFTA_SET_ELEM_LIST_SET, set);
        self.sock.send(&m.finish(), 0)?;
        let mut keys: Vec<(Vec<u8>, bool)> = Vec::new();
        loop {
            let (data, _) = self.sock.recv_from_full()?;
            let mut rest = &data[..];
            while rest.len() >= 16 {
                let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let ty = u16::from_ne_bytes([rest[4], rest[5]]);
                if len < 16 || len > rest.len() {
                    break;
                }
                match ty {
                    NLMSG_DONE => return Ok(Some(elems_from_keys(kind, keys))),
                    NLMSG_ERROR if len >= 20 => {
                        let errno = i32::from_ne_bytes([rest[16], rest[17], rest[18], rest[19]]);
                        if errno == -libc::ENOENT {
                            return Ok(None);
                        }
                        if errno != 0 {
                            return Err(NftError::Refused {
                                what: format!("dump of set {set}"),
                                source: io::Error::from_raw_os_error(-errno),
                            });
                        }
                    }
                    _ if len > 20 => collect_keys(&rest[20..len], &mut keys),
                    _ => {}
                }
                rest = &rest[(len.div_ceil(4) * 4).min(rest.len())..];
            }
        }
    }
}

/// Attributes of a netlink message body: (type without flags, value).
fn attrs(mut b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            break;
        }
        out.push((ty, &b[4..len]));
        b = &b[(len.div_ceil(4) * 4).min(b.len())..];
    }
    out
}

fn collect_keys(body: &[u8], keys: &mut Vec<(Vec<u8>, bool)>) {
    for (ty, list) in attrs(body) {
        if ty != NFTA_SET_ELEM_LIST_ELEMENTS {
            continue;
        }
        for (_, elem) in attrs(list) {
            let mut key = None;
            let mut end = false;
            for (ety, v) in attrs(elem) {
                match ety {
                    NFTA_SET_ELEM_KEY => {
                        key = attrs(v)
                            .into_iter()
                            .find(|(t, _)| *t == NFTA_DATA_VALUE)
                            .map(|(_, d)| d.to_vec());
                    }
                    NFTA_SET_ELEM_FLAGS if v.len() == 4 => {
                        end = u32::from_be_bytes([v[0], v[1], v[2], v[3]])
                            & NFT_SET_ELEM_INTERVAL_END
                            != 0;
                    }
                    _ => {}
                }
            }
            if let Some(k) = key {
                keys.push((k, end));
            }
        }
    }
}

fn elems_from_keys(kind: SetKind, keys: Vec<(Vec<u8>, bool)>) -> std::collections::BTreeSet<Elem> {
    let addr = |k: &[u8]| Ipv4Addr::new(k[0], k[1], k[2], k[3]);
    match kind {
        SetKind::Addr => keys
            .iter()
            .filter(|(k, _)| k.len() == 4)
            .map(|(k, _)| Elem::Addr(addr(k)))
            .collect(),
        SetKind::AddrProtoPort => keys
            .iter()
            .filter(|(k, _)| k.len() == 12)
            .map(|(k, _)| Elem::AddrProtoPort(addr(k), k[4], u16::from_be_bytes([k[8], k[9]])))
            .collect(),
        SetKind::AddrRanges => {
            let mut points: Vec<(u32, bool)> = keys
                .iter()
                .filter(|(k, _)| k.len() == 4)
                .map(|(k, end)| (u32::from(addr(k)), *end))
                .collect();
            points.sort();
            let mut out = std::collections::BTreeSet::new();
            let mut start = None;
            for (p, end) in points {
                match (end, start) {
                    (false, None) => start = Some(p),
                    (true, Some(s)) if p > s => {
                        out.insert(Elem::Range(Ipv4Addr::from(s), Ipv4Addr::from(p - 1)));
                        start = None;
                    }
                    // A start right after a start, or an end that closes
                    // nothing: keep the newest start.
                    (false, Some(_)) => start = Some(p),
                    _ => {}
                }
            }
            if let Some(s) = start {
                out.insert(Elem::Range(Ipv4Addr::from(s), Ipv4Addr::BROADCAST));
            }
            out
        }
    }
}

/// Whether bridged IPv4 passes iptables/nftables ip hooks here
/// (`net.bridge.bridge-nf-call-iptables`), which our ruleset relies on.
pub fn bridge_nf_call_iptables() -> io::Result<bool> {
    let v = std::fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables")?;
    Ok(v.trim() == "1")
}
