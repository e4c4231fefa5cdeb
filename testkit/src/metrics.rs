//! A service's Prometheus text, and a counter's value read from it.

/// The Prometheus text a service at `base` (`http://host:port`) serves at `/metrics`.
pub async fn scrape(client: &reqwest::Client, base: &str) -> String {
    client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("the metrics answer")
        .text()
        .await
        .expect("the metrics are text")
}

/// A counter's value in Prometheus text: the sum over the series of `name` whose line contains
/// `matching` (a label, say).
pub fn counter(metrics: &str, name: &str, matching: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(matching))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
