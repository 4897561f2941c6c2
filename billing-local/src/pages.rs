//! The pages the local Stripe hosts in Stripe's place: Checkout and the customer portal. Plain
//! HTML forms, so they work without JavaScript and a browser test can drive them by id. Every
//! value from a Stripe object is escaped: emails and URLs come from whoever called the API.

use serde_json::Value;

/// Text for HTML, also inside double-quoted attributes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn layout(title: &str, body: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} · local Stripe</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, sans-serif; max-width: 34rem; margin: 3rem auto; padding: 0 1rem; color: #1a1f36; }}
.banner {{ background: #fff4e5; border: 1px solid #f5a623; padding: .5rem .75rem; border-radius: 6px; font-size: .9rem; }}
.card {{ border: 1px solid #e3e8ee; border-radius: 8px; padding: 1rem 1.25rem; margin: 1rem 0; }}
.error {{ color: #c0123c; font-weight: 600; }}
.done {{ color: #0a7d3b; font-weight: 600; }}
button {{ background: #635bff; color: #fff; border: 0; border-radius: 6px; padding: .6rem 1.1rem; font-size: 1rem; cursor: pointer; }}
input, select {{ font-size: 1rem; padding: .45rem; border: 1px solid #cfd7df; border-radius: 6px; }}
</style></head>
<body><p class="banner">Local Stripe: test mode, nothing is charged. 4242 4242 4242 4242 pays;
4000 0000 0000 0002 is declined.</p>
{body}</body></html>"#,
        title = escape(title),
    )
}

/// A URL a Checkout Session was given, with `{CHECKOUT_SESSION_ID}` filled in as Stripe fills it.
pub fn session_url(url: &Value, session_id: &str) -> String {
    url.as_str()
        .unwrap_or("/")
        .replace("{CHECKOUT_SESSION_ID}", session_id)
}

/// `5499` `cad` → `CAD 54.99`.
pub fn money(amount: &Value, currency: &Value) -> String {
    let minor = amount.as_i64().unwrap_or(0);
    format!(
        "{} {}.{:02}",
        currency.as_str().unwrap_or("").to_uppercase(),
        minor / 100,
        minor % 100
    )
}

fn price_label(price: &Value) -> String {
    let name = price["nickname"]
        .as_str()
        .or(price["lookup_key"].as_str())
        .unwrap_or_else(|| price["id"].as_str().unwrap_or(""));
    format!(
        "{name}: {} / {}",
        money(&price["unit_amount"], &price["currency"]),
        price["recurring"]["interval"].as_str().unwrap_or("period")
    )
}

pub fn checkout(session: &Value, email: &str, error: Option<&str>) -> String {
    let id = session["id"].as_str().unwrap_or_default();
    let amount = money(&session["amount_total"], &session["currency"]);
    let cancel = session_url(&session["cancel_url"], id);
    let body = if session["status"] != "open" {
        format!(
            r#"<h1>Checkout</h1><p id="closed">This checkout session is {}.</p>"#,
            escape(session["status"].as_str().unwrap_or("closed"))
        )
    } else {
        let error = error
            .map(|e| {
                format!(
                    r#"<p id="error" class="error" role="alert">{}</p>"#,
                    escape(e)
                )
            })
            .unwrap_or_default();
        format!(
            r#"<h1>Subscribe</h1>
<div class="card"><p>Amount due today: <strong id="amount">{amount}</strong></p>
<p>Email: <span id="email">{email}</span></p>
<form method="post" action="/checkout/{id}">
<label>Card number <input id="card" name="card" inputmode="numeric" autocomplete="cc-number" placeholder="4242 4242 4242 4242" required></label>
<p><label>Expiry <input name="expiry" placeholder="12 / 34" size="7"></label>
<label>CVC <input name="cvc" placeholder="123" size="4"></label></p>
{error}<p><button id="pay" type="submit">Pay {amount}</button></p>
</form></div>
<p><a id="cancel-link" href="{cancel}">Cancel and go back</a></p>"#,
            amount = escape(&amount),
            email = escape(email),
            id = escape(id),
            cancel = escape(&cancel),
        )
    };
    layout("Checkout", &body)
}

pub fn portal(
    portal: &Value,
    subscriptions: &[Value],
    prices: &[Value],
    done: Option<&str>,
) -> String {
    let id = escape(portal["id"].as_str().unwrap_or_default());
    let mut body = String::from("<h1>Your subscription</h1>");
    if let Some(done) = done {
        body += &format!(
            r#"<p id="done" class="done" role="status">Done: {}.</p>"#,
            escape(done)
        );
    }
    for s in subscriptions {
        let sub = escape(s["id"].as_str().unwrap_or_default());
        let item = &s["items"]["data"][0];
        let current = item["price"]["id"].as_str().unwrap_or_default();
        let cancel_at_end = s["cancel_at_period_end"] == true;
        let options: String = prices
            .iter()
            .filter(|p| p["id"] != current)
            .map(|p| {
                format!(
                    r#"<option value="{}">{}</option>"#,
                    escape(p["id"].as_str().unwrap_or_default()),
                    escape(&price_label(p))
                )
            })
            .collect();
        let (cancel_value, cancel_label) = match cancel_at_end {
            true => ("false", "Renew"),
            false => ("true", "Cancel at period end"),
        };
        body += &format!(
            r#"<div class="card subscription" id="sub-{sub}">
<p>{plan}</p><p>Status: <strong class="status">{status}</strong>{ending}</p>
<form method="post" action="/portal/{id}/cancel"><input type="hidden" name="subscription" value="{sub}">
<input type="hidden" name="cancel" value="{cancel_value}"><button id="cancel-{sub}" type="submit">{cancel_label}</button></form>
<form method="post" action="/portal/{id}/switch"><input type="hidden" name="subscription" value="{sub}">
<select name="price" id="price-{sub}">{options}</select> <button id="switch-{sub}" type="submit">Switch plan</button></form>
</div>"#,
            plan = escape(&price_label(&item["price"])),
            status = escape(s["status"].as_str().unwrap_or_default()),
            ending = match cancel_at_end {
                true => r#" <span class="ending">(cancels at the end of the period)</span>"#,
                false => "",
            },
        );
    }
    if subscriptions.is_empty() {
        body += "<p>No subscriptions.</p>";
    }
    body += &format!(
        r#"<p><a id="return" href="{}">Return</a></p>"#,
        escape(portal["return_url"].as_str().unwrap_or("/"))
    );
    layout("Customer portal", &body)
}

pub fn error(message: &str) -> String {
    layout(
        "Error",
        &format!(
            r#"<p id="error" class="error" role="alert">{}</p>"#,
            escape(message)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_from_stripe_objects_are_escaped() {
        let session = json!({"id": "cs_1", "status": "open", "amount_total": 5499, "currency": "cad",
                             "cancel_url": "https://x/\"><script>alert(1)</script>"});
        let page = checkout(&session, "<b>@example.com", Some("<img src=x>"));
        assert!(!page.contains("<script>alert"));
        assert!(!page.contains("<b>@"));
        assert!(!page.contains("<img src=x>"));
        assert!(page.contains("CAD 54.99"));
    }
}
