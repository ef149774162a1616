//! The allocator's persistent store: the ring, the addresses each
//! identifier holds, and our Paxos state, in an embedded transactional
//! database (redb) at `<db-prefix>data.redb`.
//!
//! Every [`PersistWrite`] is one committed, durable transaction, applied
//! before the router acts on any allocator output that follows it, so a
//! kill -9 at any moment leaves the store at a state the allocator had
//! already reached. The file name differs from Weave's BoltDB file
//! (`<db-prefix>data.db`), which weave-rs does not read or overwrite.
//!
//! redb was chosen over a hand-rolled log because it gives crash-safe
//! transactions with per-key updates (one record per identifier, not a
//! rewrite of the whole address map per allocation) and uses plain file
//! I/O, no writable mmap (which the VM's 9p root cannot do).
//!
//! Values: the ring and the Paxos claims are stored in Weave's own gob
//! form (the `IPallocation` gossip state), each behind our peer name so a
//! store made under another name is ignored; addresses as compact binary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use redb::{Database, ReadableTable, TableDefinition};

use crate::ipam::messages::PaxosSnapshot;
use crate::ipam::paxos::NodeId;
use crate::ipam::wire::{decode_gossip, encode_gossip};
use crate::ipam::{Address, Cidr, GossipState, OwnedData, PeerName, PersistWrite, Persisted};

const TABLE: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("ipam");
const RING: &str = "ring";
const PAXOS: &str = "paxos";
const OWNED: &str = "owned/";

/// The open store.
pub struct IpamStore {
    db: Database,
    path: PathBuf,
}

/// Where the store of a router with this `--db-prefix` lives.
pub fn store_path(db_prefix: &Path) -> PathBuf {
    let mut path = db_prefix.as_os_str().to_owned();
    path.push("data.redb");
    PathBuf::from(path)
}

impl IpamStore {
    /// Opens (or creates) the store and reads back what it holds.
    pub fn open(path: &Path) -> Result<(IpamStore, Persisted)> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let db = Database::create(path)
            .with_context(|| format!("opening the IPAM store {}", path.display()))?;
        let store = IpamStore {
            db,
            path: path.to_path_buf(),
        };
        let persisted = store
            .load()
            .with_context(|| format!("reading the IPAM store {}", path.display()))?;
        Ok((store, persisted))
    }

    fn load(&self) -> Result<Persisted> {
        let mut persisted = Persisted::default();
        let read = self.db.begin_read()?;
        let table = match read.open_table(TABLE) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(persisted),
            Err(error) => return Err(error.into()),
        };
        if let Some(value) = table.get(RING)? {
            let (peer, rest) = split_name(value.value())?;
            let state = decode_gossip(rest).map_err(|e| anyhow::anyhow!("ring record: {e}"))?;
            if let Some(ring) = state.ring {
                persisted.ring = Some((peer, ring));
            }
        }
        if let Some(value) = table.get(PAXOS)? {
            let (peer_name, rest) = split_name(value.value())?;
            let (name, rest) = split_name(rest)?;
            let (uid, rest) = split_u64(rest)?;
            let state = decode_gossip(rest).map_err(|e| anyhow::anyhow!("paxos record: {e}"))?;
            persisted.paxos = Some(PaxosSnapshot {
                peer_name,
                id: NodeId { name, uid },
                knows: state.paxos.unwrap_or_default(),
            });
        }
        let mut owned = BTreeMap::new();
        for entry in table.range(OWNED..)? {
            let (key, value) = entry?;
            let Some(ident) = key.value().strip_prefix(OWNED) else {
                break;
            };
            owned.insert(ident.to_string(), decode_owned(value.value())?);
        }
        if !owned.is_empty() {
            persisted.owned = Some(owned);
        }
        Ok(persisted)
    }

    /// Applies one write in its own durable transaction.
    pub fn apply(&self, write: &PersistWrite) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(TABLE)?;
            match write {
                PersistWrite::Ring { peer_name, ring } => {
                    let state = GossipState {
                        ring: Some(ring.clone()),
                        ..GossipState::default()
                    };
                    let mut value = peer_name.0.to_be_bytes().to_vec();
                    value.extend(encode_gossip(&state));
                    table.insert(RING, value.as_slice())?;
                }
                PersistWrite::Paxos(snapshot) => {
                    let state = GossipState {
                        paxos: Some(snapshot.knows.clone()),
                        ..GossipState::default()
                    };
                    let mut value = snapshot.peer_name.0.to_be_bytes().to_vec();
                    value.extend(snapshot.id.name.0.to_be_bytes());
                    value.extend(snapshot.id.uid.to_be_bytes());
                    value.extend(encode_gossip(&state));
                    table.insert(PAXOS, value.as_slice())?;
                }
                PersistWrite::Owned(all) => {
                    let keys: Vec<String> = table
                        .range(OWNED..)?
                        .filter_map(|entry| entry.ok())
                        .map(|(key, _)| key.value().to_string())
                        .take_while(|key| key.starts_with(OWNED))
                        .collect();
                    for key in keys {
                        table.remove(key.as_str())?;
                    }
                    for (ident, data) in all {
                        table.insert(
                            format!("{OWNED}{ident}").as_str(),
                            encode_owned(data).as_slice(),
                        )?;
                    }
                }
                PersistWrite::OwnedEntry { ident, data } => {
                    let key = format!("{OWNED}{ident}");
                    match data {
                        Some(data) => {
                            table.insert(key.as_str(), encode_owned(data).as_slice())?;
                        }
                        None => {
                            table.remove(key.as_str())?;
                        }
                    }
                }
            }
        }
        txn.commit()
            .with_context(|| format!("committing to {}", self.path.display()))?;
        Ok(())
    }
}

fn split_u64(bytes: &[u8]) -> Result<(u64, &[u8])> {
    let Some((head, rest)) = bytes.split_first_chunk::<8>() else {
        bail!("record too short");
    };
    Ok((u64::from_be_bytes(*head), rest))
}

fn split_name(bytes: &[u8]) -> Result<(PeerName, &[u8])> {
    let (value, rest) = split_u64(bytes)?;
    Ok((PeerName(value), rest))
}

/// One byte "is a container", then five bytes (address, prefix) per CIDR.
fn encode_owned(data: &OwnedData) -> Vec<u8> {
    let mut out = vec![u8::from(data.is_container)];
    for cidr in &data.cidrs {
        out.extend(cidr.addr.0.to_be_bytes());
        out.push(cidr.prefix_len);
    }
    out
}

fn decode_owned(bytes: &[u8]) -> Result<OwnedData> {
    let Some((flag, rest)) = bytes.split_first() else {
        bail!("empty address record");
    };
    if rest.len() % 5 != 0 {
        bail!("address record of {} bytes is not whole", bytes.len());
    }
    let cidrs = rest
        .chunks_exact(5)
        .map(|chunk| {
            let addr = Address(u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]));
            Cidr::new(addr, chunk[4]).map_err(|e| anyhow::anyhow!("address record: {e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(OwnedData {
        is_container: *flag != 0,
        cidrs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_survive_reopening() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("weave-ipam-store-{}", std::process::id()));
        let path = store_path(&dir.join("weave"));
        let cidr = |s: &str| s.parse::<Cidr>().expect("cidr");
        {
            let (store, persisted) = IpamStore::open(&path)?;
            assert_eq!(persisted, Persisted::default());
            let data = OwnedData {
                is_container: true,
                cidrs: vec![cidr("10.32.0.1/12"), cidr("10.40.0.7/24")],
            };
            store.apply(&PersistWrite::OwnedEntry {
                ident: "c1".into(),
                data: Some(data),
            })?;
            store.apply(&PersistWrite::OwnedEntry {
                ident: "c2".into(),
                data: Some(OwnedData::default()),
            })?;
            store.apply(&PersistWrite::OwnedEntry {
                ident: "c2".into(),
                data: None,
            })?;
        }
        let (_, persisted) = IpamStore::open(&path)?;
        let owned = persisted.owned.expect("owned");
        assert_eq!(owned.len(), 1);
        assert_eq!(
            owned["c1"].cidrs,
            [cidr("10.32.0.1/12"), cidr("10.40.0.7/24")]
        );
        assert!(owned["c1"].is_container);
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn corrupt_records_are_errors() {
        assert!(decode_owned(&[]).is_err());
        assert!(decode_owned(&[1, 10, 32, 0]).is_err());
        assert!(decode_owned(&[1, 10, 32, 0, 1, 40]).is_err());
        assert!(split_name(&[1, 2, 3]).is_err());
    }
}
