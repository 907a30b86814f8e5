//! The repository's catalogue (`producer/catalogue.json`) for tests, and orders
//! priced by it. Behind the feature `fixtures`, so that no shipped binary
//! carries them.

use serde_json::{Value, json};

use super::{Catalogue, Prices};

/// `producer/catalogue.json`, the catalogue `scripts/dev` serves.
pub fn catalogue() -> Catalogue {
    Catalogue::parse(include_str!("../../catalogue.json"))
        .unwrap_or_else(|err| panic!("producer/catalogue.json is invalid: {err}"))
}

/// [`Prices`] with [`catalogue`] current.
pub fn prices() -> Prices {
    Prices::new(catalogue())
}

/// `request` (an `order_contract::fixtures` order, say) in the catalogue's
/// currency, line `i` being the catalogue's item `i` (round the list) at its
/// price; quantities, ids and the customer stay as they were.
pub fn priced(mut request: Value) -> Value {
    let catalogue = catalogue();
    request["currency"] = json!(catalogue.currency);
    if let Some(lines) = request["items"].as_array_mut() {
        for (index, line) in lines.iter_mut().enumerate() {
            let item = &catalogue.items[index % catalogue.items.len()];
            line["sku"] = json!(item.sku);
            line["unit_price_cents"] = json!(item.unit_price_cents);
        }
    }
    request
}
