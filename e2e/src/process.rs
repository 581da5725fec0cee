//! Starting and stopping the local cluster's processes, so that none outlives its owner.
//!
//! Two lifetimes exist. A test binary's processes die with it, even when it exits without
//! running destructors (the kernel sends them SIGKILL through `PR_SET_PDEATHSIG`). The
//! processes of `e2e up` outlive the command and are stopped by `e2e down`, by PID, after
//! checking that each PID still runs the binary it was started as.

use std::{
    fs::{self, File},
    io,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Mutex, OnceLock, mpsc},
    thread,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde::{Deserialize, Serialize};

/// How long a started process may live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifetime {
    /// Killed by the kernel when this process exits, however it exits. For tests.
    WithThisProcess,
    /// Runs on after this process exits, in its own process group, until stopped by PID.
    Detached,
}

/// Why a process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The log file could not be created.
    #[error("creating log file {path}: {source}")]
    Log {
        /// The log file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The executable could not be started.
    #[error("starting {name} ({exe}): {source}")]
    Spawn {
        /// The process's role, e.g. `etcd`.
        name: String,
        /// The executable.
        exe: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// A process the local cluster started, as recorded for stopping it later.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// Its role, e.g. `kube-apiserver`.
    pub name: String,
    /// Its process ID.
    pub pid: u32,
    /// The executable it was started from, to tell it from a later process with the same PID.
    pub exe: PathBuf,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
}

impl Service {
    /// Whether the process still runs the executable it was started as.
    pub fn is_running(&self) -> bool {
        let Ok(exe) = fs::read_link(format!("/proc/{}/exe", self.pid)) else {
            // Gone, or a zombie waiting to be reaped: either way it runs nothing.
            return false;
        };
        let started = fs::canonicalize(&self.exe).unwrap_or_else(|_| self.exe.clone());
        exe == started
    }
}

/// Starts `exe` with `args`, its output appended to `log`.
///
/// # Errors
///
/// When the log file cannot be created or the executable cannot be started.
pub fn spawn(
    name: &str,
    exe: &Path,
    args: &[String],
    log: &Path,
    lifetime: Lifetime,
) -> Result<Service, ProcessError> {
    let log_error = |source| ProcessError::Log { path: log.to_owned(), source };
    let out = File::options().create(true).append(true).open(log).map_err(log_error)?;
    let err = out.try_clone().map_err(log_error)?;

    let mut command = Command::new(exe);
    command.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
    let spawned = match lifetime {
        Lifetime::WithThisProcess => spawn_bound_to_this_process(command),
        Lifetime::Detached => command.process_group(0).spawn(),
    };
    let child = spawned.map_err(|source| ProcessError::Spawn {
        name: name.to_owned(),
        exe: exe.to_owned(),
        source,
    })?;

    let service = Service {
        name: name.to_owned(),
        pid: child.id(),
        exe: exe.to_owned(),
        log: log.to_owned(),
    };
    children().lock().unwrap_or_else(|e| e.into_inner()).push(child);
    Ok(service)
}

/// Processes started together, for one purpose: if the group is dropped before
/// [`Group::keep`], for instance because a later step of a start-up failed, it stops them.
#[derive(Debug, Default)]
pub struct Group {
    services: Vec<Service>,
}

impl Group {
    /// Adds a started process to the group.
    pub fn push(&mut self, service: Service) -> &Service {
        self.services.push(service);
        self.services.last().expect("just pushed")
    }

    /// Adds every process of another group, which then stops nothing.
    pub fn absorb(&mut self, mut other: Group) {
        self.services.append(&mut other.services);
    }

    /// Ends the group's responsibility: the processes run on and are returned.
    pub fn keep(mut self) -> Vec<Service> {
        std::mem::take(&mut self.services)
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.services.is_empty() {
            stop(&self.services, Duration::from_secs(5));
        }
    }
}

/// Stops `services` one at a time in reverse start order, so that a server stops before what
/// it depends on (the API server before etcd): SIGTERM, up to `grace` for it to exit, then
/// SIGKILL. Returns the names of those that needed SIGKILL.
pub fn stop(services: &[Service], grace: Duration) -> Vec<String> {
    let mut killed = Vec::new();
    for service in services.iter().rev() {
        if !service.is_running() {
            continue;
        }
        let _ = kill(pid(service), Signal::SIGTERM);
        if wait_for_exit(service, grace) {
            continue;
        }
        let _ = kill(pid(service), Signal::SIGKILL);
        killed.push(service.name.clone());
        wait_for_exit(service, Duration::from_secs(5));
    }
    killed
}

/// Waits up to `timeout` for `service` to exit, reaping it if it is our child.
fn wait_for_exit(service: &Service, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        reap_children();
        if !service.is_running() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn pid(service: &Service) -> Pid {
    Pid::from_raw(i32::try_from(service.pid).unwrap_or(i32::MAX))
}

/// Children this process started, kept so that exited ones are reaped instead of lingering
/// as zombies.
fn children() -> &'static Mutex<Vec<Child>> {
    static CHILDREN: OnceLock<Mutex<Vec<Child>>> = OnceLock::new();
    CHILDREN.get_or_init(Mutex::default)
}

fn reap_children() {
    let mut children = children().lock().unwrap_or_else(|e| e.into_inner());
    children.retain_mut(|child| matches!(child.try_wait(), Ok(None)));
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `command` so that the kernel kills it when this process exits.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process.
/// Test threads come and go, so every such child is forked by one thread that lives as long
/// as the process.
fn spawn_bound_to_this_process(command: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (requests, incoming) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("e2e-spawner".into())
            .spawn(move || {
                for (mut command, reply) in incoming {
                    let _ = reply.send(spawn_with_death_signal(&mut command));
                }
            })
            .expect("start the spawner thread");
        Mutex::new(requests)
    });

    let (reply, result) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((command, reply))
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    result.recv().map_err(|_| io::Error::other("the spawner thread is gone"))?
}

#[allow(unsafe_code)]
fn spawn_with_death_signal(command: &mut Command) -> io::Result<Child> {
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed; it makes one prctl(2) system call and allocates
    // nothing.
    unsafe {
        command
            .pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from));
    }
    command.spawn()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleeper(lifetime: Lifetime, dir: &Path) -> Service {
        let log = dir.join("sleep.log");
        spawn("sleeper", Path::new("/bin/sleep"), &["30".into()], &log, lifetime).unwrap()
    }

    #[test]
    fn stop_ends_a_process_started_detached() {
        let dir = tempfile::tempdir().unwrap();
        let service = sleeper(Lifetime::Detached, dir.path());
        assert!(service.is_running());

        let killed = stop(std::slice::from_ref(&service), Duration::from_secs(5));

        assert!(killed.is_empty(), "sleep should exit on SIGTERM");
        assert!(!service.is_running());
    }

    #[test]
    fn a_recycled_pid_running_another_binary_is_not_taken_for_the_service() {
        let dir = tempfile::tempdir().unwrap();
        let mut service = sleeper(Lifetime::WithThisProcess, dir.path());
        let real_exe = service.exe.clone();
        service.exe = PathBuf::from("/bin/true");

        assert!(!service.is_running());

        service.exe = real_exe;
        stop(&[service], Duration::from_secs(5));
    }
}
