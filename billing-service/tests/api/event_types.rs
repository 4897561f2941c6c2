//! One list of event types: the built-in handler registry. The default catalog's
//! `enabled_events` (what Stripe is asked to send), the fixtures `stripe-setup trigger` sends and
//! the README's table of handled events must name exactly its types; this fails when they drift.
//! (`tests/tests/trigger_against_service.rs` then sends each one and checks it ends `processed`.)

use std::collections::BTreeSet;

use billing_service::webhook::handlers::Handlers;
use billing_stripe::catalog::Catalog;
use billing_stripe::fixtures;

fn registry() -> BTreeSet<String> {
    Handlers::builtin()
        .event_types()
        .into_iter()
        .map(str::to_owned)
        .collect()
}

fn assert_same(what: &str, listed: BTreeSet<String>) {
    let registry = registry();
    let missing: Vec<_> = registry.difference(&listed).collect();
    let extra: Vec<_> = listed.difference(&registry).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what} differs from the handler registry: missing {missing:?}, not handled {extra:?}"
    );
}

#[test]
fn the_default_catalog_subscribes_to_exactly_the_handled_types() {
    let catalog = Catalog::builtin();
    let listed: BTreeSet<String> = catalog.webhook.enabled_events.iter().cloned().collect();
    assert_eq!(
        listed.len(),
        catalog.webhook.enabled_events.len(),
        "no type twice"
    );
    assert_same("the default catalog's enabled_events", listed);
}

#[test]
fn trigger_can_send_exactly_the_handled_types() {
    let listed = fixtures::SUPPORTED
        .iter()
        .map(|t| (*t).to_owned())
        .collect();
    assert_same("billing_stripe::fixtures::SUPPORTED", listed);
}

/// The event types named in the README's table under "| event | effect |". A cell lists
/// backquoted types, where `.updated` after `customer.created` stands for `customer.updated`.
fn readme_types(readme: &str) -> BTreeSet<String> {
    let table = readme
        .split("| event | effect |")
        .nth(1)
        .expect("the README has the table of handled events");
    let mut types = BTreeSet::new();
    for row in table.lines().skip(2).take_while(|l| l.starts_with('|')) {
        let cell = row.split('|').nth(1).unwrap_or_default();
        let mut prefix = String::new();
        for name in cell.split('`').skip(1).step_by(2) {
            let full = match name.strip_prefix('.') {
                Some(suffix) => format!("{prefix}.{suffix}"),
                None => name.to_owned(),
            };
            prefix = full
                .rsplit_once('.')
                .map(|(p, _)| p.to_owned())
                .unwrap_or_default();
            types.insert(full);
        }
    }
    types
}

#[test]
fn the_readme_table_lists_exactly_the_handled_types() {
    let readme = include_str!("../../../README.md");
    assert_same("the README's table of handled events", readme_types(readme));
}

#[test]
fn the_readme_shorthand_is_read_as_written() {
    let table = "| event | effect |\n|---|---|\n| `customer.created`, `.updated` | x |\n| `invoice.paid` | y |\n\nafter";
    let types: Vec<String> = readme_types(table).into_iter().collect();
    assert_eq!(
        types,
        ["customer.created", "customer.updated", "invoice.paid"]
    );
}
