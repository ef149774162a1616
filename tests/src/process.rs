//! Commands run to completion, and long-running processes stopped on drop.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A command line, optionally run inside a network namespace.
#[derive(Debug, Clone)]
pub struct Command {
    program: String,
    args: Vec<String>,
    netns: Option<String>,
    env: Vec<(String, String)>,
    cwd: Option<PathBuf>,
}

/// What a finished command printed, and how it exited.
#[derive(Debug, Clone)]
pub struct Output {
    /// The exit status.
    pub status: ExitStatus,
    /// Standard output, lossily decoded as UTF-8.
    pub stdout: String,
    /// Standard error, lossily decoded as UTF-8.
    pub stderr: String,
}

impl Command {
    /// A command that runs `program` (looked up in `PATH`).
    pub fn new(program: &str) -> Command {
        Command {
            program: program.to_string(),
            args: Vec::new(),
            netns: None,
            env: Vec::new(),
            cwd: None,
        }
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl AsRef<str>) -> Command {
        self.args.push(arg.as_ref().to_string());
        self
    }

    /// Appends several arguments.
    pub fn args<S: AsRef<str>>(mut self, args: impl IntoIterator<Item = S>) -> Command {
        self.args
            .extend(args.into_iter().map(|arg| arg.as_ref().to_string()));
        self
    }

    /// Sets an environment variable for the command.
    pub fn env(mut self, key: &str, value: impl AsRef<str>) -> Command {
        self.env.push((key.to_string(), value.as_ref().to_string()));
        self
    }

    /// Runs the command in `dir`.
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Command {
        self.cwd = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Runs the command inside network namespace `name`.
    pub fn in_netns(mut self, name: &str) -> Command {
        self.netns = Some(name.to_string());
        self
    }

    /// The command line as it will be run, for messages.
    pub fn display(&self) -> String {
        let mut words = Vec::new();
        if let Some(ns) = &self.netns {
            words.push(format!("[netns {ns}]"));
        }
        words.push(self.program.clone());
        words.extend(self.args.iter().cloned());
        words.join(" ")
    }

    fn std_command(&self) -> std::process::Command {
        let mut command = match &self.netns {
            Some(ns) => {
                let mut command = std::process::Command::new("ip");
                command.args(["netns", "exec", ns, &self.program]);
                command
            }
            None => std::process::Command::new(&self.program),
        };
        command.args(&self.args);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(dir) = &self.cwd {
            command.current_dir(dir);
        }
        command
    }

    /// Runs the command to completion, whatever its exit status.
    pub fn output(&self) -> Result<Output> {
        let out = self
            .std_command()
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("starting `{}`", self.display()))?;
        Ok(Output {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Runs the command to completion with `input` on its standard input,
    /// whatever its exit status.
    pub fn output_with_input(&self, input: &[u8]) -> Result<Output> {
        use std::io::Write;
        let mut child = self
            .std_command()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting `{}`", self.display()))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A program may exit without reading its input: that is its
            // answer, not our error.
            let _ = stdin.write_all(input);
        }
        let out = child
            .wait_with_output()
            .with_context(|| format!("waiting for `{}`", self.display()))?;
        Ok(Output {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Runs the command to completion and fails unless it exits 0; the
    /// error carries the command line, its status and what it printed.
    pub fn run(&self) -> Result<Output> {
        let out = self.output()?;
        if !out.status.success() {
            bail!(
                "`{}` failed ({}):\n{}{}",
                self.display(),
                out.status,
                out.stdout,
                out.stderr
            );
        }
        Ok(out)
    }

    /// Starts the command in the background with stdout and stderr going to
    /// `log` (created or truncated). With a namespace, it returns only once
    /// the process is inside it, so that deleting the namespace (which kills
    /// what runs there) cannot miss a process still on its way in.
    pub fn spawn(&self, log: impl AsRef<Path>) -> Result<Process> {
        let log = log.as_ref().to_path_buf();
        let file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = self
            .std_command()
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting `{}`", self.display()))?;
        let mut process = Process {
            child,
            description: self.display(),
            log,
        };
        if let Some(ns) = &self.netns {
            process.wait_until_in_netns(ns)?;
        }
        Ok(process)
    }
}

/// A background process; dropping it stops it (SIGTERM, then SIGKILL).
#[derive(Debug)]
pub struct Process {
    child: Child,
    description: String,
    log: PathBuf,
}

impl Process {
    /// The process id (of the program itself: `ip netns exec` execs it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The command line the process runs.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Where its output goes.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything it has printed so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// Waits until the process runs in network namespace `ns` (or exits).
    fn wait_until_in_netns(&mut self, ns: &str) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let target = std::fs::metadata(Path::new("/run/netns").join(ns))
            .with_context(|| format!("namespace {ns}"))?
            .ino();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let here = std::fs::metadata(format!("/proc/{}/ns/net", self.child.id()))
                .map(|m| m.ino())
                .ok();
            if here == Some(target) || self.child.try_wait()?.is_some() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "`{}` did not enter namespace {ns} within 5 s",
                    self.description
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Its exit status if it has exited.
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `timeout` for it to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`).
    pub fn signal(&self, signal: i32) -> Result<()> {
        let pid = i32::try_from(self.child.id()).context("pid out of range")?;
        // SAFETY: kill has no memory-safety preconditions.
        if unsafe { libc::kill(pid, signal) } != 0 {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::ESRCH) {
                return Err(error).context("sending a signal");
            }
        }
        Ok(())
    }

    /// Kills it at once (SIGKILL) and reaps it, as a crash would.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        self.signal(libc::SIGKILL)?;
        Ok(self.child.wait()?)
    }

    /// Asks it to stop (SIGTERM), and kills it if it has not exited within
    /// `grace`.
    pub fn stop(&mut self, grace: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        self.signal(libc::SIGTERM)?;
        match self.wait_timeout(grace)? {
            Some(status) => Ok(status),
            None => self.kill(),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.stop(Duration::from_secs(2));
    }
}
