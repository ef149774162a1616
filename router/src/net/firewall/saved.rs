//! The text format shared by `iptables-save` and `iptables-restore`:
//! reading a listing into tables, chains and rules, and writing words back
//! with the quoting the listing uses.
//!
//! A listing is a sequence of tables (`*filter` … `COMMIT`); in each, the
//! chains are declared (`:NAME POLICY [packets:bytes]`, policy `-` for a
//! user chain) and then every rule is printed as `-A CHAIN <spec>`. A word
//! holding anything but letters, digits, `-` and `_` is printed in double
//! quotes, with `"`, `\` and `'` escaped by a backslash.

use std::collections::BTreeMap;

use super::rules::Table;

/// A listing that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SavedError {
    /// A double quote is not closed by the end of the line.
    #[error("line {line}: unterminated quote")]
    UnterminatedQuote {
        /// The 1-based line number.
        line: usize,
    },
    /// A chain declaration or rule outside any table.
    #[error("line {line}: {text:?} outside a table")]
    OutsideTable {
        /// The 1-based line number.
        line: usize,
        /// The line.
        text: String,
    },
}

/// One table of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SavedTable {
    /// The chains, in the order declared (built-in ones included).
    pub chains: Vec<String>,
    /// The rules, in order: the chain, and the words after it.
    pub rules: Vec<(String, Vec<String>)>,
}

impl SavedTable {
    /// The specs of the rules in `chain`, in order.
    pub fn rules_of<'a>(&'a self, chain: &'a str) -> impl Iterator<Item = &'a [String]> + 'a {
        self.rules
            .iter()
            .filter(move |(c, _)| c == chain)
            .map(|(_, spec)| spec.as_slice())
    }
}

/// What an `iptables-save` listing shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Saved {
    tables: BTreeMap<String, SavedTable>,
}

impl Saved {
    /// Reads `text`. Comments and blank lines are skipped; a table listed
    /// twice has its parts joined.
    pub fn parse(text: &str) -> Result<Saved, SavedError> {
        let mut saved = Saved::default();
        let mut current: Option<String> = None;
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            let number = index + 1;
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('*') {
                saved.tables.entry(name.to_string()).or_default();
                current = Some(name.to_string());
                continue;
            }
            if line == "COMMIT" {
                current = None;
                continue;
            }
            let table = match current.as_ref().and_then(|t| saved.tables.get_mut(t)) {
                Some(table) => table,
                None => {
                    return Err(SavedError::OutsideTable {
                        line: number,
                        text: line.to_string(),
                    });
                }
            };
            if let Some(declared) = line.strip_prefix(':') {
                if let Some(name) = declared.split_whitespace().next() {
                    table.chains.push(name.to_string());
                }
                continue;
            }
            let words = split_words(line).ok_or(SavedError::UnterminatedQuote { line: number })?;
            let mut words = words.into_iter();
            if let (Some(op), Some(chain)) = (words.next(), words.next())
                && op == "-A"
            {
                table.rules.push((chain, words.collect()));
            }
        }
        Ok(saved)
    }

    /// The table named `table`, if listed.
    pub fn table(&self, table: Table) -> Option<&SavedTable> {
        self.tables.get(table.as_str())
    }

    /// Whether `chain` exists in `table`.
    pub fn has_chain(&self, table: Table, chain: &str) -> bool {
        self.table(table)
            .is_some_and(|t| t.chains.iter().any(|c| c == chain))
    }

    /// The specs of the rules in `table`/`chain`, in order.
    pub fn rules_of<'a>(&'a self, table: Table, chain: &'a str) -> Vec<&'a [String]> {
        self.table(table)
            .map(|t| t.rules_of(chain).collect())
            .unwrap_or_default()
    }
}

/// Splits a listing line into words, undoing the quoting; `None` when a
/// quote is left open.
pub fn split_words(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '\\' => match chars.next() {
                    Some(next) => word.push(next),
                    None => return None,
                },
                '"' => quoted = false,
                c => word.push(c),
            }
        } else if c == '"' {
            quoted = true;
            in_word = true;
        } else if c.is_whitespace() {
            if in_word {
                words.push(std::mem::take(&mut word));
                in_word = false;
            }
        } else {
            word.push(c);
            in_word = true;
        }
    }
    if quoted {
        return None;
    }
    if in_word {
        words.push(word);
    }
    Some(words)
}

/// `word` as a listing prints it: bare when it is only letters, digits,
/// `-` and `_`, else in double quotes with `"`, `\` and `'` escaped. Words
/// that are options or negations (`-j`, `!`) and addresses print bare too
/// (iptables writes them itself, not through its quoting).
pub fn quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_');
    let printed_bare = |c: char| plain(c) || matches!(c, '!' | '.' | '/' | ',' | ':' | '+');
    if !word.is_empty() && word.chars().all(printed_bare) {
        return word.to_string();
    }
    let mut out = String::with_capacity(word.len() + 2);
    out.push('"');
    for c in word.chars() {
        if matches!(c, '"' | '\\' | '\'') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// `words` joined into one listing line.
pub fn join_words<S: AsRef<str>>(words: &[S]) -> String {
    words
        .iter()
        .map(|w| quote(w.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Fuzz target body: reads `data` as a listing and plans the router's
/// set-up against it; any input parses or fails with an error, and the
/// plan is made, never a panic.
pub fn fuzz_parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(saved) = Saved::parse(&text) {
        for table in [Table::Filter, Table::Nat, Table::Mangle] {
            let _ = saved.rules_of(table, "FORWARD");
        }
        let mut config = super::rules::FirewallConfig::new("weave");
        config.control_port = Some(6784);
        let set = super::rules::host_rules(&config);
        let exposed = super::rules::expose_rules(
            ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(10, 32, 0, 1), 12).unwrap_or_default(),
            false,
            config.npc,
        );
        let _ = super::plan::plan(&set, &exposed, &[], &saved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = r#"# Generated by iptables-save v1.8.9 on Thu Nov 26 03:38:06 2026
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:WEAVE - [0:0]
-A POSTROUTING -j WEAVE
-A WEAVE ! -s 10.32.0.0/12 -d 10.32.0.0/12 -j MASQUERADE
COMMIT
# Completed on Thu Nov 26 03:38:06 2026
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:WEAVE-NPC - [0:0]
-A INPUT -d 127.0.0.1/32 -p tcp -m tcp --dport 6784 -m comment --comment "Block non-local access" -j DROP
-A FORWARD -i weave -m comment --comment "NOTE: this must go before \'-j KUBE-FORWARD\'" -j WEAVE-NPC
COMMIT
# Warning: iptables-legacy tables present, use iptables-legacy-save to see them
"#;

    #[test]
    fn listing_parses_into_tables_chains_and_rules() {
        let saved = Saved::parse(LISTING).unwrap();
        assert!(saved.has_chain(Table::Nat, "WEAVE"));
        assert!(saved.has_chain(Table::Filter, "FORWARD"));
        assert!(!saved.has_chain(Table::Filter, "WEAVE"));
        assert!(!saved.has_chain(Table::Mangle, "PREROUTING"));
        assert_eq!(
            saved.rules_of(Table::Nat, "WEAVE"),
            [[
                "!",
                "-s",
                "10.32.0.0/12",
                "-d",
                "10.32.0.0/12",
                "-j",
                "MASQUERADE"
            ]
            .map(String::from)]
        );
        let forward = saved.rules_of(Table::Filter, "FORWARD");
        assert_eq!(
            forward[0],
            [
                "-i",
                "weave",
                "-m",
                "comment",
                "--comment",
                "NOTE: this must go before '-j KUBE-FORWARD'",
                "-j",
                "WEAVE-NPC"
            ]
            .map(String::from)
        );
    }

    #[test]
    fn quoting_round_trips_as_iptables_prints_it() {
        for line in LISTING.lines().filter(|l| l.starts_with("-A ")) {
            let words = split_words(line).unwrap();
            assert_eq!(join_words(&words), line);
        }
        assert_eq!(quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(quote(""), r#""""#);
        assert_eq!(
            split_words(r#"-A X "a b"c d"#).unwrap(),
            ["-A", "X", "a bc", "d"]
        );
    }

    #[test]
    fn bad_listings_are_errors() {
        assert_eq!(
            Saved::parse("*filter\n-A INPUT -m comment --comment \"open\n"),
            Err(SavedError::UnterminatedQuote { line: 2 })
        );
        assert!(matches!(
            Saved::parse("-A INPUT -j DROP\n"),
            Err(SavedError::OutsideTable { line: 1, .. })
        ));
    }

    #[test]
    fn pseudo_random_listings_never_panic() {
        let alphabet = b"*:-A \"\\\n#COMMITfilternat!'x";
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..3000 {
            let mut data = Vec::new();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 80) as usize;
            for i in 0..len {
                let x = seed.rotate_left(i as u32 * 7) as usize;
                data.push(alphabet[x % alphabet.len()]);
            }
            fuzz_parse(&data);
        }
    }
}
