//! CPU accounting from /proc (Linux) for the benches: the machine is
//! shared, so a bench says how much of it other processes took meanwhile.

use std::time::Duration;

/// USER_HZ, the unit of /proc's CPU times: 100 on every Linux architecture
/// Rust targets.
pub const TICK: Duration = Duration::from_millis(10);

/// Busy time of all cores together (user, nice, system, irq, softirq and
/// steal), from /proc/stat (Linux).
pub fn machine_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let busy: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .map(|&i| ticks.get(i).copied().unwrap_or(0))
        .sum();
    Some(TICK * busy as u32)
}

/// User plus system time of this process, from /proc/self/stat (Linux).
pub fn process_cpu() -> Option<Duration> {
    cpu_of(&std::fs::read_to_string("/proc/self/stat").ok()?).map(|(_, t)| t)
}

/// User plus system time of every process named `name` (e.g. the
/// `postgres` server's processes), from /proc/*/stat (Linux). A process
/// that exits between two readings takes its time with it, so compare
/// readings taken while the processes of interest live.
pub fn processes_cpu(name: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        if let Ok(stat) = std::fs::read_to_string(entry.path().join("stat"))
            && let Some((comm, time)) = cpu_of(&stat)
            && comm == name
        {
            total += time;
        }
    }
    Some(total)
}

/// The command name and user plus system time of a /proc `stat` line.
pub fn cpu_of(stat: &str) -> Option<(&str, Duration)> {
    let (head, tail) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1;
    // Fields after the parenthesised command name, which may hold spaces;
    // utime and stime are fields 14 and 15 of the whole line.
    let mut fields = tail.split_whitespace().skip(11);
    let ticks: u64 = fields.next()?.parse::<u64>().ok()? + fields.next()?.parse::<u64>().ok()?;
    Some((name, TICK * ticks as u32))
}
