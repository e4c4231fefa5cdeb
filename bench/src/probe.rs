//! Readings from outside the services: CPU time and peak memory from `/proc`, latency
//! quantiles and stage times from the processor's Prometheus histograms, and `redis-benchmark`.

/// CPU time (user + system) a process has used, in microseconds.
pub fn cpu_micros(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, own, _) = ticks(&stat)?;
    Some(own * 1_000_000 / clock_ticks_per_second())
}

/// CPU time (user + system) every process named `command` has used, with the children each
/// has reaped (so a PostgreSQL backend that ended between two readings still counts, through
/// the postmaster), in microseconds; `None` if no such process runs.
pub fn cpu_micros_named(command: &str) -> Option<u64> {
    let mut total = None;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some((name, own, reaped)) = ticks(&stat)
            && name == command
        {
            *total.get_or_insert(0) += own + reaped;
        }
    }
    total.map(|ticks| ticks * 1_000_000 / clock_ticks_per_second())
}

/// A `/proc/{pid}/stat` line's command name, its own CPU ticks (user + system) and those of
/// the children it has reaped.
fn ticks(stat: &str) -> Option<(&str, u64, u64)> {
    // The command name is in parentheses and may hold spaces and parentheses.
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1;
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let [utime, stime, cutime, cstime] = <[u64; 4]>::try_from(fields).ok()?;
    Some((name, utime + stime, cutime + cstime))
}

fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100)
}

/// Peak resident memory of a process, in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The Prometheus text a service at `url` serves at `/metrics`.
pub async fn scrape(client: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    Ok(client
        .get(format!("{url}/metrics"))
        .send()
        .await?
        .text()
        .await?)
}

/// The cumulative buckets `(upper bound in seconds, count)` of histogram `name`, of the series
/// whose other labels are exactly `labels` (as written between the braces, e.g.
/// `route="/events"`; empty for none).
pub fn buckets(metrics: &str, name: &str, labels: &str) -> Vec<(f64, f64)> {
    let labels = if labels.is_empty() {
        String::new()
    } else {
        format!("{labels},")
    };
    let prefix = format!("{name}_bucket{{{labels}le=\"");
    metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect()
}

/// The `_sum` of histogram `name` for the series whose labels are exactly `labels` (as written
/// between the braces, e.g. `stage="decide"`).
pub fn sum(metrics: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}_sum{{{labels}}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix)?.trim().parse().ok())
}

/// The sum of every series of counter `name`.
pub fn total(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// `redis-benchmark` requests per second for the commands the pipeline uses.
pub fn redis_benchmark(host: &str, port: u16) -> Vec<(String, f64)> {
    let base = [
        "-h",
        host,
        "-p",
        &port.to_string(),
        "-q",
        "-n",
        "100000",
        "-c",
        "50",
    ]
    .map(String::from);
    let runs: [&[&str]; 3] = [
        &["-t", "set,get"],
        &["hset", "bench:idem", "state", "lease"],
        &[
            "eval",
            "return redis.call('HGET', KEYS[1], 'state')",
            "1",
            "bench:idem",
        ],
    ];
    let mut figures = Vec::new();
    for run in runs {
        let Ok(output) = std::process::Command::new("redis-benchmark")
            .args(&base)
            .args(run)
            .output()
        else {
            continue;
        };
        for line in String::from_utf8_lossy(&output.stdout).split(['\r', '\n']) {
            if let Some((name, rest)) = line.split_once(": ")
                && let Some(rps) = rest.split_whitespace().next().and_then(|r| r.parse().ok())
            {
                let name = if name.starts_with("eval") {
                    "EVAL (idempotency script shape)"
                } else {
                    name
                };
                figures.push((name.trim().to_owned(), rps));
            }
        }
    }
    figures
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_read_from_prometheus_text() {
        let text = "x_bucket{le=\"0.5\"} 3\nx_bucket{le=\"+Inf\"} 4\nx_sum 1\n";
        assert_eq!(
            buckets(text, "x", ""),
            vec![(0.5, 3.0), (f64::INFINITY, 4.0)]
        );
    }

    #[test]
    fn buckets_are_read_from_the_series_with_the_labels_asked_for() {
        let text = "x_bucket{route=\"/a\",le=\"0.5\"} 3\nx_bucket{route=\"/a\",le=\"+Inf\"} 4\n\
                    x_bucket{route=\"/b\",le=\"0.5\"} 7\nx_bucket{route=\"/b\",le=\"+Inf\"} 9\n";
        assert_eq!(
            buckets(text, "x", "route=\"/b\""),
            vec![(0.5, 7.0), (f64::INFINITY, 9.0)]
        );
        assert!(buckets(text, "x", "").is_empty());
    }

    #[test]
    fn a_stat_line_gives_its_name_and_ticks_whatever_the_name_holds() {
        let stat = "4242 (postgres: walwriter (x)) S 1 4242 4242 0 -1 4194368 \
                    240 0 0 0 15 7 3 2 20 0 1 0 1234 0 0";
        assert_eq!(ticks(stat), Some(("postgres: walwriter (x)", 22, 5)));
        assert_eq!(ticks("4242 (beam.smp) S 1"), None);
    }

    #[test]
    fn this_process_is_found_by_its_name_and_has_used_some_cpu() {
        let name = std::fs::read_to_string("/proc/self/comm").expect("comm");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut spin = 0u64;
        // Busy until the kernel has counted a tick of it (or the deadline).
        while cpu_micros_named(name.trim()).unwrap_or(0) == 0 {
            assert!(std::time::Instant::now() < deadline, "no CPU time read");
            for i in 0..1_000_000u64 {
                spin = std::hint::black_box(spin.wrapping_add(i ^ spin.rotate_left(3)));
            }
        }
        assert_eq!(cpu_micros_named("no-such-process-name"), None);
    }
}
