//! One series out of the Prometheus text `GET /metrics` serves.

/// The value of `name{labels...}` (every given label must match; others may be present), or 0
/// when the series does not exist yet: a counter that was never incremented is not printed.
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter(|(series, _)| {
            let (series_name, series_labels) = match series.split_once('{') {
                Some((n, l)) => (n, l.trim_end_matches('}')),
                None => (*series, ""),
            };
            series_name == name
                && labels.iter().all(|(k, v)| {
                    series_labels
                        .split(',')
                        .any(|pair| pair == format!("{k}=\"{v}\""))
                })
        })
        .filter_map(|(_, value)| value.trim().parse::<f64>().ok())
        .sum()
}

/// `GET <base>/metrics` as text.
pub async fn scrape(client: &reqwest::Client, base: &str) -> String {
    let response = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("GET /metrics answers");
    assert!(response.status().is_success(), "{}", response.status());
    response.text().await.expect("the metrics text")
}

#[cfg(test)]
mod tests {
    use super::value;

    #[test]
    fn reads_a_series_by_name_and_labels() {
        let text = "# HELP x y\n\
            billing_webhook_events_processed_total{type=\"customer.created\",outcome=\"processed\"} 1\n\
            billing_webhook_events_processed_total{type=\"customer.created\",outcome=\"retry\"} 2\n\
            billing_webhook_events_processed_total{type=\"invoice.paid\",outcome=\"processed\"} 5\n\
            billing_webhook_queue_depth 3\n";
        let name = "billing_webhook_events_processed_total";
        let created = [("type", "customer.created"), ("outcome", "processed")];
        assert_eq!(value(text, name, &created), 1.0);
        assert_eq!(value(text, name, &[("outcome", "processed")]), 6.0);
        assert_eq!(value(text, name, &[("outcome", "failed")]), 0.0);
        assert_eq!(value(text, "billing_webhook_queue_depth", &[]), 3.0);
    }
}
