//! Carrying out the rules with the iptables commands, in the variant
//! (legacy or nft) the host uses.
//!
//! Every command is a process, and a process is dear where iptables is
//! slow (about a second each in an emulated VM): [`Iptables`] counts the
//! ones it starts ([`Iptables::spawned`]), and the router's set-up reads
//! the tables with one `iptables-save` and changes them with one
//! `iptables-restore --noflush` ([`Iptables::restore`]).

use std::fmt;
use std::io::{self, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::rules::{Chain, Rule, Table};

/// Which iptables the host's rules live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// The x_tables kernel interface (`iptables-legacy`).
    Legacy,
    /// nf_tables through the iptables compatibility layer (`iptables-nft`).
    Nft,
}

impl Variant {
    /// Both variants.
    pub const ALL: [Variant; 2] = [Variant::Legacy, Variant::Nft];

    /// The name iptables prints for it in `--version` (`legacy`,
    /// `nf_tables`).
    pub fn version_tag(self) -> &'static str {
        match self {
            Variant::Legacy => "legacy",
            Variant::Nft => "nf_tables",
        }
    }

    /// The suffix of its commands (`iptables-<suffix>`).
    pub fn suffix(self) -> &'static str {
        match self {
            Variant::Legacy => "legacy",
            Variant::Nft => "nft",
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "iptables-{}", self.suffix())
    }
}

/// An iptables command that failed.
#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    /// The command could not be started.
    #[error("running {command}: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The command exited with a failure.
    #[error("{command} exited with {code:?}: {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit code.
        code: Option<i32>,
        /// What it said.
        stderr: String,
    },
    /// Neither the variant's command nor a matching `iptables` exists.
    #[error("no {0} command on this host")]
    Missing(Variant),
    /// `iptables-restore` refused its input (nothing of the table being
    /// committed when it failed changed).
    #[error("{}", restore_message(.command, *.code, *.line, .input_line.as_deref(), .stderr))]
    Restore {
        /// The command line.
        command: String,
        /// Its exit code.
        code: Option<i32>,
        /// The 1-based line of the input it failed at, when it said
        /// (iptables-nft names the table's `COMMIT` when the kernel refused
        /// the table as a whole).
        line: Option<usize>,
        /// That line of the input.
        input_line: Option<String>,
        /// What it said.
        stderr: String,
    },
}

fn restore_message(
    command: &str,
    code: Option<i32>,
    line: Option<usize>,
    input_line: Option<&str>,
    stderr: &str,
) -> String {
    let mut text = format!("{command} exited with {code:?}");
    if let Some(line) = line {
        text.push_str(&format!(" at input line {line}"));
        if let Some(input) = input_line {
            text.push_str(&format!(" ({input:?})"));
        }
    }
    text.push_str(": ");
    text.push_str(stderr);
    text
}

/// The input line an `iptables-restore` error names: `Error occurred at
/// line: 7` or `line 7 failed`.
pub fn restore_error_line(stderr: &str) -> Option<usize> {
    for marker in ["line: ", "line "] {
        for (at, _) in stderr.match_indices(marker) {
            let rest = stderr.get(at + marker.len()..).unwrap_or("");
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if let Ok(line) = digits.parse() {
                return Some(line);
            }
        }
    }
    None
}

/// Finds `program` in `PATH`.
pub fn find_program(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Output of one command.
#[derive(Debug)]
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl From<std::process::Output> for Ran {
    fn from(out: std::process::Output) -> Ran {
        Ran {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        }
    }
}

/// The iptables commands of one variant. Clones share the count of
/// processes started.
#[derive(Debug, Clone)]
pub struct Iptables {
    variant: Variant,
    program: String,
    save_program: String,
    /// `iptables-restore` of the same variant, when installed.
    restore_program: Option<String>,
    spawned: Arc<AtomicUsize>,
}

impl PartialEq for Iptables {
    fn eq(&self, other: &Iptables) -> bool {
        self.variant == other.variant
            && self.program == other.program
            && self.save_program == other.save_program
            && self.restore_program == other.restore_program
    }
}

impl Eq for Iptables {}

/// Exit status of `iptables -C` for "no such rule".
const EXIT_NOT_FOUND: i32 = 1;

impl Iptables {
    /// The commands of `variant`: `iptables-<variant>` when installed, else
    /// a plain `iptables` that reports that variant.
    pub fn new(variant: Variant) -> Result<Iptables, IptablesError> {
        let program = format!("iptables-{}", variant.suffix());
        let save = format!("iptables-{}-save", variant.suffix());
        let restore = format!("iptables-{}-restore", variant.suffix());
        let made = |program: String, save: String, restore: String| Iptables {
            variant,
            program,
            save_program: save,
            restore_program: find_program(&restore).map(|_| restore),
            spawned: Arc::new(AtomicUsize::new(0)),
        };
        if find_program(&program).is_some() && find_program(&save).is_some() {
            return Ok(made(program, save, restore));
        }
        if find_program("iptables").is_some()
            && find_program("iptables-save").is_some()
            && default_variant() == Some(variant)
        {
            return Ok(made(
                "iptables".into(),
                "iptables-save".into(),
                "iptables-restore".into(),
            ));
        }
        Err(IptablesError::Missing(variant))
    }

    /// How many processes these commands (and their clones) have started.
    pub fn spawned(&self) -> usize {
        self.spawned.load(Ordering::Relaxed)
    }

    /// Whether an `iptables-restore` of the variant is installed.
    pub fn can_restore(&self) -> bool {
        self.restore_program.is_some()
    }

    /// The variant driven.
    pub fn variant(&self) -> Variant {
        self.variant
    }

    fn run_program(&self, program: &str, args: &[&str]) -> Result<Ran, IptablesError> {
        self.spawned.fetch_add(1, Ordering::Relaxed);
        let out = Command::new(program)
            .args(args)
            .output()
            .map_err(|source| IptablesError::Spawn {
                command: program.to_string(),
                source,
            })?;
        Ok(Ran::from(out))
    }

    fn command_line(&self, args: &[&str]) -> String {
        let mut line = self.program.clone();
        for arg in args {
            line.push(' ');
            line.push_str(arg);
        }
        line
    }

    /// Runs `iptables -w <args>`; fails unless it exits 0.
    fn run(&self, args: &[&str]) -> Result<String, IptablesError> {
        let mut full = vec!["-w"];
        full.extend_from_slice(args);
        let ran = self.run_program(&self.program, &full)?;
        if ran.code == Some(0) {
            Ok(ran.stdout)
        } else {
            Err(IptablesError::Failed {
                command: self.command_line(&full),
                code: ran.code,
                stderr: ran.stderr,
            })
        }
    }

    /// The output of `iptables-save` (optionally for one table).
    pub fn save(&self, table: Option<Table>) -> Result<String, IptablesError> {
        let mut args = Vec::new();
        if let Some(table) = table {
            args.extend(["-t", table.as_str()]);
        }
        let ran = self.run_program(&self.save_program, &args)?;
        if ran.code == Some(0) {
            Ok(ran.stdout)
        } else {
            Err(IptablesError::Failed {
                command: format!("{} {}", self.save_program, args.join(" ")),
                code: ran.code,
                stderr: ran.stderr,
            })
        }
    }

    /// Feeds `input` to `iptables-restore -w --noflush`: the tables it
    /// names change, each at its `COMMIT` and all at once, and nothing else
    /// is touched. An `iptables-restore` too old for `-w` is run again
    /// without it.
    pub fn restore(&self, input: &str) -> Result<(), IptablesError> {
        let program = self
            .restore_program
            .as_deref()
            .ok_or(IptablesError::Missing(self.variant))?;
        let mut args = vec!["-w", "--noflush"];
        let mut ran = self.run_with_input(program, &args, input)?;
        if ran.code != Some(0)
            && (ran.stderr.contains("unrecognized option") || ran.stderr.contains("invalid option"))
        {
            args.remove(0);
            ran = self.run_with_input(program, &args, input)?;
        }
        if ran.code == Some(0) {
            return Ok(());
        }
        let line = restore_error_line(&ran.stderr);
        Err(IptablesError::Restore {
            command: format!("{program} {}", args.join(" ")),
            code: ran.code,
            line,
            input_line: line
                .and_then(|n| input.lines().nth(n.checked_sub(1)?))
                .map(str::to_string),
            stderr: ran.stderr,
        })
    }

    /// Runs `program` with `input` on its standard input.
    fn run_with_input(
        &self,
        program: &str,
        args: &[&str],
        input: &str,
    ) -> Result<Ran, IptablesError> {
        self.spawned.fetch_add(1, Ordering::Relaxed);
        let spawn_error = |source| IptablesError::Spawn {
            command: format!("{program} {}", args.join(" ")),
            source,
        };
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_error)?;
        let stdin = child.stdin.take();
        let out = std::thread::scope(|scope| {
            if let Some(mut stdin) = stdin {
                // A command that stops reading early (it failed) closes the
                // pipe; its exit status tells what happened.
                scope.spawn(move || {
                    let _ = stdin.write_all(input.as_bytes());
                });
            }
            child.wait_with_output()
        })
        .map_err(spawn_error)?;
        Ok(Ran::from(out))
    }

    /// The chains of `table`.
    pub fn chains(&self, table: Table) -> Result<Vec<String>, IptablesError> {
        let listing = self.run(&["-t", table.as_str(), "-S"])?;
        Ok(listing
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                match (words.next(), words.next()) {
                    (Some("-N" | "-P"), Some(name)) => Some(name.to_string()),
                    _ => None,
                }
            })
            .collect())
    }

    /// The rules of one chain, as `iptables -S` prints them.
    pub fn list(&self, table: Table, chain: &str) -> Result<Vec<String>, IptablesError> {
        let listing = self.run(&["-t", table.as_str(), "-S", chain])?;
        Ok(listing
            .lines()
            .filter(|l| l.starts_with("-A "))
            .map(str::to_string)
            .collect())
    }

    /// Whether `chain` exists.
    pub fn chain_exists(&self, chain: &Chain) -> Result<bool, IptablesError> {
        Ok(self.chains(chain.table)?.contains(&chain.name))
    }

    /// Creates `chain` unless it exists.
    pub fn ensure_chain(&self, chain: &Chain) -> Result<(), IptablesError> {
        if !self.chain_exists(chain)? {
            self.run(&["-t", chain.table.as_str(), "-N", &chain.name])?;
        }
        Ok(())
    }

    /// Empties `chain`, creating it if missing.
    pub fn clear_chain(&self, chain: &Chain) -> Result<(), IptablesError> {
        if self.chain_exists(chain)? {
            self.run(&["-t", chain.table.as_str(), "-F", &chain.name])?;
        } else {
            self.run(&["-t", chain.table.as_str(), "-N", &chain.name])?;
        }
        Ok(())
    }

    /// Empties and deletes `chain`; false if it did not exist.
    pub fn delete_chain(&self, chain: &Chain) -> Result<bool, IptablesError> {
        if !self.chain_exists(chain)? {
            return Ok(false);
        }
        self.run(&["-t", chain.table.as_str(), "-F", &chain.name])?;
        self.run(&["-t", chain.table.as_str(), "-X", &chain.name])?;
        Ok(true)
    }

    fn rule_args<'a>(
        &self,
        op: &'a str,
        rule: &'a Rule,
        position: Option<&'a str>,
    ) -> Vec<&'a str> {
        let mut args = vec!["-t", rule.table.as_str(), op, rule.chain.as_str()];
        if let Some(pos) = position {
            args.push(pos);
        }
        args.extend(rule.spec.iter().map(String::as_str));
        args
    }

    /// Whether `rule` is present (`iptables -C`).
    pub fn exists(&self, rule: &Rule) -> Result<bool, IptablesError> {
        let mut args = vec!["-w"];
        args.extend(self.rule_args("-C", rule, None));
        let ran = self.run_program(&self.program, &args)?;
        match ran.code {
            Some(0) => Ok(true),
            Some(EXIT_NOT_FOUND) => Ok(false),
            code => Err(IptablesError::Failed {
                command: self.command_line(&args),
                code,
                stderr: ran.stderr,
            }),
        }
    }

    /// Appends `rule` unless present; true if it was added.
    pub fn append_unique(&self, rule: &Rule) -> Result<bool, IptablesError> {
        if self.exists(rule)? {
            return Ok(false);
        }
        self.run(&self.rule_args("-A", rule, None))?;
        Ok(true)
    }

    /// Inserts `rule` at 1-based `position`.
    pub fn insert(&self, rule: &Rule, position: usize) -> Result<(), IptablesError> {
        let pos = position.to_string();
        self.run(&self.rule_args("-I", rule, Some(&pos)))?;
        Ok(())
    }

    /// Deletes every copy of `rule`; returns how many there were.
    pub fn delete_all(&self, rule: &Rule) -> Result<usize, IptablesError> {
        let mut removed = 0;
        // A chain holds finitely many copies; the bound only guards against
        // an iptables that reports success without deleting.
        while removed < 1000 && self.exists(rule)? {
            self.run(&self.rule_args("-D", rule, None))?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Makes `specs` the first rules of `table`/`chain`, in order. When all
    /// are present nothing changes; otherwise they are all removed and put
    /// back at the top, so their order holds (Weave's approach).
    pub fn ensure_at_top(
        &self,
        table: Table,
        chain: &str,
        specs: &[Vec<String>],
    ) -> Result<bool, IptablesError> {
        let rules: Vec<Rule> = specs
            .iter()
            .map(|spec| Rule {
                table,
                chain: chain.to_string(),
                spec: spec.clone(),
            })
            .collect();
        let mut all = true;
        for rule in &rules {
            if !self.exists(rule)? {
                all = false;
                break;
            }
        }
        if all {
            return Ok(false);
        }
        for (i, rule) in rules.iter().enumerate() {
            self.delete_all(rule)?;
            self.insert(rule, i + 1)?;
        }
        Ok(true)
    }
}

/// The variant a plain `iptables` command on this host uses, if there is one.
pub fn default_variant() -> Option<Variant> {
    let out = Command::new("iptables").arg("--version").output().ok()?;
    parse_version(&String::from_utf8_lossy(&out.stdout))
}

/// Reads the variant from `iptables --version` output
/// (`iptables v1.8.9 (nf_tables)`); versions before 1.8 are legacy.
pub fn parse_version(text: &str) -> Option<Variant> {
    let line = text.lines().next()?;
    if !line.starts_with("iptables v") {
        return None;
    }
    if line.contains("(nf_tables)") {
        Some(Variant::Nft)
    } else {
        Some(Variant::Legacy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(
            parse_version("iptables v1.8.9 (nf_tables)\n"),
            Some(Variant::Nft)
        );
        assert_eq!(
            parse_version("iptables v1.8.9 (legacy)\n"),
            Some(Variant::Legacy)
        );
        assert_eq!(parse_version("iptables v1.6.1\n"), Some(Variant::Legacy));
        assert_eq!(parse_version(""), None);
        assert_eq!(parse_version("bash: iptables: not found"), None);
    }

    #[test]
    fn restore_errors_name_the_input_line() {
        assert_eq!(
            restore_error_line(
                "iptables-restore v1.8.9 (legacy): Couldn't load target `NOPE'\n\nError occurred at line: 7\nTry `iptables-restore -h'"
            ),
            Some(7)
        );
        assert_eq!(
            restore_error_line("iptables-restore: line 12 failed"),
            Some(12)
        );
        assert_eq!(restore_error_line("no line here"), None);
        let error = IptablesError::Restore {
            command: "iptables-nft-restore -w --noflush".into(),
            code: Some(2),
            line: Some(3),
            input_line: Some("-A WEAVE -j NOPE".into()),
            stderr: "Chain 'NOPE' does not exist".into(),
        };
        assert_eq!(
            error.to_string(),
            "iptables-nft-restore -w --noflush exited with Some(2) at input line 3 (\"-A WEAVE -j NOPE\"): Chain 'NOPE' does not exist"
        );
    }
}
