use super::*;
use serde_json::json;

fn catalogue(version: &str, price: u32) -> Catalogue {
    Catalogue::parse(
        &json!({
            "currency": "EUR",
            "version": version,
            "items": [
                {"sku": "NOTEBOOK-A5", "name": "Notebook", "unit_price_cents": price},
                {"sku": "PEN-GEL-BLACK", "name": "Gel pen", "unit_price_cents": 249},
            ],
        })
        .to_string(),
    )
    .expect("a valid catalogue")
}

fn order(currency: &str, lines: &[(&str, u32)]) -> Order {
    let items: Vec<_> = lines
        .iter()
        .map(|(sku, price)| json!({"sku": sku, "quantity": 1, "unit_price_cents": price}))
        .collect();
    let request = json!({
        "order_id": uuid::Uuid::new_v4(),
        "customer_id": "cust-42",
        "currency": currency,
        "items": items,
    });
    Order::from_request_json(&request.to_string()).expect("a valid order")
}

fn refusal(text: serde_json::Value) -> String {
    Catalogue::parse(&text.to_string())
        .expect_err("refused")
        .to_string()
}

#[test]
fn the_repositorys_catalogue_is_valid() {
    let text = include_str!("../../catalogue.json");
    let catalogue = Catalogue::parse(text).expect("producer/catalogue.json is valid");
    assert_eq!(catalogue.currency, "EUR");
    assert!(catalogue.items.len() >= 4, "the page's four items at least");
}

#[test]
fn a_catalogue_without_items_version_or_names_is_refused_saying_what_to_fix() {
    let no_items = refusal(json!({"currency": "EUR", "version": "1", "items": []}));
    assert!(no_items.starts_with("items is empty"), "{no_items}");
    let no_version = refusal(json!({"currency": "EUR", "version": " ", "items": [
        {"sku": "A", "name": "a", "unit_price_cents": 1}]}));
    assert!(no_version.starts_with("version is empty"), "{no_version}");
    let no_name = refusal(json!({"currency": "EUR", "version": "1", "items": [
        {"sku": "A", "name": "", "unit_price_cents": 1}]}));
    assert!(no_name.starts_with("items[0].name: is empty"), "{no_name}");
    let unknown = refusal(json!({"currency": "EUR", "version": "1", "items": [
        {"sku": "A", "name": "a", "unit_price_cents": 1, "colour": "red"}]}));
    assert!(
        unknown.starts_with("not a catalogue: unknown field `colour`"),
        "{unknown}"
    );
}

#[test]
fn a_version_the_message_could_not_carry_is_refused() {
    let mut catalogue = json!({
        "currency": "EUR",
        "version": "v".repeat(65),
        "items": [{"sku": "PEN-GEL-BLACK", "name": "Gel pen", "unit_price_cents": 249}],
    });
    assert_eq!(
        refusal(catalogue.clone()),
        "version: must be 1 to 64 printable ASCII characters"
    );
    catalogue["version"] = json!("2026-12\n07");
    assert!(refusal(catalogue).starts_with("version:"));
}

#[test]
fn skus_and_prices_follow_the_contract_and_skus_are_unique() {
    let item = |sku: &str, price: i64| json!({"sku": sku, "name": "x", "unit_price_cents": price});
    let catalogue = |items: Vec<serde_json::Value>| {
        refusal(json!({"currency": "EUR", "version": "1", "items": items}))
    };
    let too_dear = catalogue(vec![item("A", 1), item("B", 1_000_000_001)]);
    assert!(
        too_dear.starts_with("items[1].unit_price_cents: must be between 0 and 1000000000"),
        "{too_dear}"
    );
    let bad_sku = catalogue(vec![item("A", 1), item("B", 1), item("tab\there", 1)]);
    assert!(
        bad_sku.starts_with("items[2].sku: may only contain printable ASCII"),
        "{bad_sku}"
    );
    let twice = catalogue(vec![item("A", 1), item("A", 2)]);
    assert!(
        twice.starts_with("items[1].sku \"A\" is listed twice"),
        "{twice}"
    );
    let currency = refusal(json!({"currency": "euro", "version": "1", "items": [item("A", 1)]}));
    assert!(currency.starts_with("currency: "), "{currency}");
}

#[test]
fn an_order_at_the_catalogues_prices_is_accepted() {
    let prices = Prices::new(catalogue("1", 1299));
    assert_eq!(
        prices.check(&order(
            "EUR",
            &[("NOTEBOOK-A5", 1299), ("PEN-GEL-BLACK", 249)]
        )),
        Ok("1".to_owned())
    );
}

#[test]
fn an_unknown_sku_names_its_line_and_a_wrong_price_is_stale() {
    let prices = Prices::new(catalogue("1", 1299));
    let current = prices.current().expect("current");
    assert_eq!(
        prices.check(&order("EUR", &[("PEN-GEL-BLACK", 249), ("MADE-UP", 1)])),
        Err(Unpriced::UnknownSku {
            index: 1,
            current: Arc::clone(&current)
        })
    );
    assert_eq!(
        prices.check(&order("EUR", &[("PEN-GEL-BLACK", 249), ("NOTEBOOK-A5", 0)])),
        Err(Unpriced::Stale {
            index: 1,
            current: Arc::clone(&current)
        })
    );
    assert_eq!(
        prices.check(&order("USD", &[("PEN-GEL-BLACK", 249)])),
        Err(Unpriced::Currency { current })
    );
}

#[test]
fn without_a_valid_catalogue_no_order_is_priced() {
    assert_eq!(
        Prices::default().check(&order("EUR", &[("PEN-GEL-BLACK", 249)])),
        Err(Unpriced::NoCatalogue)
    );
}

#[tokio::test(start_paused = true)]
async fn a_replaced_price_is_accepted_for_the_retention_window_and_not_after() {
    let prices = Prices::new(catalogue("1", 1299));
    prices.replace(catalogue("2", 1499));
    let old = order("EUR", &[("NOTEBOOK-A5", 1299)]);
    let new = order("EUR", &[("NOTEBOOK-A5", 1499)]);
    assert_eq!(prices.check(&new), Ok("2".to_owned()));
    tokio::time::advance(RETAINED_FOR - Duration::from_secs(1)).await;
    assert_eq!(
        prices.check(&old),
        Ok("1".to_owned()),
        "a retry within the window, priced by the version the customer saw"
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(matches!(
        prices.check(&old),
        Err(Unpriced::Stale { index: 0, .. })
    ));
    assert_eq!(prices.check(&new), Ok("2".to_owned()));
}

#[test]
fn one_version_prices_a_whole_order_so_lines_from_two_versions_are_stale() {
    let both = |version: &str, notebook: u32, pen: u32| {
        let mut catalogue = catalogue(version, notebook);
        catalogue.items[1].unit_price_cents = pen;
        catalogue
    };
    let prices = Prices::new(both("1", 1299, 249));
    prices.replace(both("2", 1499, 299));
    // No page ever showed the notebook at 1299 beside the pen at 299.
    assert!(matches!(
        prices.check(&order(
            "EUR",
            &[("NOTEBOOK-A5", 1299), ("PEN-GEL-BLACK", 299)]
        )),
        Err(Unpriced::Stale { index: 0, .. })
    ));
    assert_eq!(
        prices.check(&order(
            "EUR",
            &[("NOTEBOOK-A5", 1299), ("PEN-GEL-BLACK", 249)]
        )),
        Ok("1".to_owned())
    );
}

#[test]
fn with_no_retention_a_replaced_price_is_stale_at_once() {
    let prices = Prices::new(catalogue("1", 1299));
    prices.retain_for(Duration::ZERO);
    prices.replace(catalogue("2", 1499));
    let old = order("EUR", &[("NOTEBOOK-A5", 1299)]);
    assert!(matches!(
        prices.check(&old),
        Err(Unpriced::Stale { index: 0, .. })
    ));
}

#[test]
fn a_stale_price_is_a_409_carrying_the_current_catalogue() {
    let prices = Prices::new(catalogue("2", 1499));
    let problem = Problem::from(
        prices
            .check(&order("EUR", &[("NOTEBOOK-A5", 1299)]))
            .expect_err("stale"),
    );
    let body = serde_json::to_value(&problem).expect("JSON");
    assert_eq!(body["status"], 409);
    assert_eq!(body["field"], "items[0].unit_price_cents");
    assert_eq!(body["catalogue"]["version"], "2");
    assert_eq!(body["catalogue"]["items"][0]["unit_price_cents"], 1499);
}

#[test]
fn the_watcher_loads_a_changed_file_and_keeps_the_last_good_one_when_it_is_invalid() {
    let dir = std::env::temp_dir().join(format!("catalogue-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("catalogue.json");
    let write =
        |c: &Catalogue| std::fs::write(&path, serde_json::to_vec(c).expect("JSON")).expect("write");
    write(&catalogue("1", 1299));
    let metrics = Metrics::new();
    let mut watcher = Watcher::start(path.clone(), metrics.clone());
    let prices = watcher.prices();
    let version = || prices.current().map(|c| c.version.clone());
    assert_eq!(version().as_deref(), Some("1"));

    write(&catalogue("2", 1499));
    watcher.check();
    assert_eq!(version().as_deref(), Some("2"));
    assert!(metrics.render().contains("producer_catalogue_invalid 0"));

    std::fs::write(&path, b"{\"currency\": \"EUR\"").expect("write");
    watcher.check();
    assert!(metrics.render().contains("producer_catalogue_invalid 1"));
    assert_eq!(
        version().as_deref(),
        Some("2"),
        "the last good one stays in use"
    );

    write(&catalogue("3", 1599));
    watcher.check();
    assert_eq!(version().as_deref(), Some("3"));
    assert!(metrics.render().contains("producer_catalogue_invalid 0"));
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn an_unreadable_file_at_start_leaves_no_catalogue_and_is_counted() {
    let metrics = Metrics::new();
    let watcher = Watcher::start("/nonexistent/catalogue.json".into(), metrics.clone());
    assert!(watcher.prices().current().is_none());
    assert!(metrics.render().contains("producer_catalogue_invalid 1"));
}
