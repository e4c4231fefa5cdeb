//! Reading the services' `/metrics` (Prometheus text format, as `metrics-exporter-prometheus`
//! writes it): samples by name and labels, sums, and quantiles from histogram buckets.
//!
//! Only what our own exporters emit is read (`name{label="value",...} number` lines; comments
//! skipped), so this is a few lines rather than a parser crate with a regex engine behind it.

use std::collections::BTreeMap;

/// One sample.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The metric name (with `_bucket`, `_sum`, `_count` suffixes as written).
    pub name: String,
    /// Its labels, in the order written.
    pub labels: Vec<(String, String)>,
    /// Its value.
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Every sample of one scrape.
#[derive(Clone, Debug, Default)]
pub struct Scrape(pub Vec<Sample>);

impl Scrape {
    /// Reads the text; lines that are not samples are skipped.
    pub fn parse(text: &str) -> Self {
        Self(text.lines().filter_map(sample).collect())
    }

    /// The sum of `name`'s samples whose labels include every pair of `matching`.
    pub fn sum(&self, name: &str, matching: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|s| s.name == name && matching.iter().all(|(k, v)| s.label(k) == Some(v)))
            .map(|s| s.value)
            .sum::<f64>()
            + 0.0 // an empty sum is -0.0; shown as 0
    }

    /// `name`'s samples summed by the value of `label`.
    pub fn by_label(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        let mut sums = BTreeMap::new();
        for s in self.0.iter().filter(|s| s.name == name) {
            if let Some(value) = s.label(label) {
                *sums.entry(value.to_owned()).or_insert(0.0) += s.value;
            }
        }
        sums
    }

    /// The cumulative buckets `(le, count)` of histogram `name`, summed over the series whose
    /// labels include `matching`, in ascending `le` (`+Inf` last).
    pub fn buckets(&self, name: &str, matching: &[(&str, &str)]) -> Vec<(f64, f64)> {
        let bucket = format!("{name}_bucket");
        let mut by_bound: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for s in self
            .0
            .iter()
            .filter(|s| s.name == bucket && matching.iter().all(|(k, v)| s.label(k) == Some(v)))
        {
            let Some(le) = s.label("le").and_then(|le| le.parse::<f64>().ok()) else {
                continue;
            };
            let entry = by_bound.entry(ordered(le)).or_insert((le, 0.0));
            entry.1 += s.value;
        }
        by_bound.into_values().collect()
    }
}

/// An f64 key that sorts like the number (for non-negative bounds and `+Inf`).
fn ordered(value: f64) -> u64 {
    value.to_bits()
}

fn sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (series, value) = line.rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let (name, labels) = match series.split_once('{') {
        None => (series, Vec::new()),
        Some((name, rest)) => (name, labels(rest.strip_suffix('}')?)?),
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `a="x",b="y \"quoted\""` → pairs.
fn labels(mut text: &str) -> Option<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    while !text.is_empty() {
        let (key, rest) = text.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, c) => value.push(c),
            }
        };
        pairs.push((key.trim_start_matches(',').to_owned(), value));
        text = rest[end + 1..].trim_start_matches(',');
    }
    Some(pairs)
}

#[cfg(test)]
mod tests {
    use shared::metric::{difference, quantile};

    use super::*;

    const TEXT: &str = r#"# TYPE pipeline_events_accepted_total counter
pipeline_events_accepted_total{kind="product.update"} 7
pipeline_events_accepted_total{kind="order.create"} 3
pipeline_http_requests_total{route="/events",method="POST",status="202"} 10
pipeline_dependency_up{dependency="redis"} 1
odd{v="a \"quoted\", comma"} 2
pipeline_end_to_end_duration_seconds_bucket{le="0.01"} 50
pipeline_end_to_end_duration_seconds_bucket{le="0.1"} 90
pipeline_end_to_end_duration_seconds_bucket{le="+Inf"} 100
pipeline_end_to_end_duration_seconds_sum 3.5
pipeline_end_to_end_duration_seconds_count 100
"#;

    #[test]
    fn reads_samples_labels_and_sums() {
        let scrape = Scrape::parse(TEXT);
        assert_eq!(scrape.sum("pipeline_events_accepted_total", &[]), 10.0);
        assert_eq!(
            scrape.sum(
                "pipeline_events_accepted_total",
                &[("kind", "order.create")]
            ),
            3.0
        );
        assert_eq!(
            scrape.by_label("pipeline_http_requests_total", "status")["202"],
            10.0
        );
        assert_eq!(scrape.0[4].label("v"), Some("a \"quoted\", comma"));
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        let scrape = Scrape::parse(TEXT);
        let buckets = scrape.buckets("pipeline_end_to_end_duration_seconds", &[]);
        assert_eq!(buckets.len(), 3);
        let p50 = quantile(&buckets, 0.5).expect("observations");
        assert!((p50 - 0.01).abs() < 1e-9, "{p50}");
        let p70 = quantile(&buckets, 0.7).expect("observations");
        assert!((p70 - 0.055).abs() < 1e-9, "{p70}");
        assert_eq!(quantile(&buckets, 0.99), Some(0.1), "beyond the last bound");
        assert_eq!(quantile(&difference(&buckets, &buckets), 0.5), None);
    }
}
