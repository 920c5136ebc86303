//! Memory and CPU of the processes under load, read from /proc.

use std::{collections::HashMap, fs};

/// Clock ticks per second of /proc/<pid>/stat's utime and stime.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// CPU seconds (user + system) a process has used so far; 0 if it is gone.
pub fn cpu_seconds(pid: i32) -> f64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // The command name may contain spaces; the fields after its closing ')' are fixed.
    let Some(after_name) = stat.rfind(')').map(|at| &stat[at + 1..]) else { return 0.0 };
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
    ticks as f64 / ticks_per_second()
}

/// A `VmXXX:` line of /proc/<pid>/status, in KiB.
fn status_kib(pid: i32, key: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| line.strip_prefix(key).and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok()))
        })
        .unwrap_or(0)
}

/// Current resident memory, KiB.
pub fn rss_kib(pid: i32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// Peak resident memory since the process started, KiB.
pub fn peak_rss_kib(pid: i32) -> u64 {
    status_kib(pid, "VmHWM:")
}

/// The processes whose command name (`/proc/<pid>/comm`) satisfies `matches`.
fn pids_named(matches: impl Fn(&str) -> bool) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| matches(comm.trim())))
        .collect()
}

/// CPU seconds per process group, sampled before and after a run.
#[derive(Debug, Clone, Default)]
pub struct CpuSample {
    by_pid: HashMap<i32, f64>,
}

/// Which group a process belongs to in the CPU split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    Api,
    Worker,
    RabbitMq,
    Postgres,
    Bench,
}

impl Group {
    pub const ALL: [Group; 5] = [Group::Api, Group::Worker, Group::RabbitMq, Group::Postgres, Group::Bench];

    pub fn name(self) -> &'static str {
        match self {
            Group::Api => "api",
            Group::Worker => "worker",
            Group::RabbitMq => "rabbitmq",
            Group::Postgres => "postgres",
            Group::Bench => "bench",
        }
    }
}

/// The pids of each group: ours by pid, the services by command name.
#[derive(Debug, Clone, Default)]
pub struct Processes {
    pub api: Vec<i32>,
    pub worker: Vec<i32>,
}

impl Processes {
    pub fn groups(&self) -> Vec<(Group, i32)> {
        let mut all = Vec::new();
        all.extend(self.api.iter().map(|&pid| (Group::Api, pid)));
        all.extend(self.worker.iter().map(|&pid| (Group::Worker, pid)));
        all.extend(pids_named(|comm| comm == "beam.smp").into_iter().map(|pid| (Group::RabbitMq, pid)));
        all.extend(pids_named(|comm| comm.starts_with("postgres") || comm.starts_with("postmaster")).into_iter().map(|pid| (Group::Postgres, pid)));
        all.push((Group::Bench, std::process::id() as i32));
        all
    }

    pub fn sample(&self) -> CpuSample {
        CpuSample { by_pid: self.groups().into_iter().map(|(_, pid)| (pid, cpu_seconds(pid))).collect() }
    }

    /// CPU seconds each group used between `before` and now.
    pub fn cpu_since(&self, before: &CpuSample) -> Vec<(Group, f64)> {
        let groups = self.groups();
        Group::ALL
            .iter()
            .map(|&group| {
                let used = groups
                    .iter()
                    .filter(|(g, _)| *g == group)
                    .map(|(_, pid)| cpu_seconds(*pid) - before.by_pid.get(pid).copied().unwrap_or(0.0))
                    .filter(|delta| *delta > 0.0)
                    .sum::<f64>()
                    // An empty sum is -0.0.
                    + 0.0;
                (group, used)
            })
            .collect()
    }
}

/// Raises the open-file limit to the hard limit (10,000 sockets need it); returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit write to and read from the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}
