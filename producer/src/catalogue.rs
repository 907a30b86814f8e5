//! The shop's catalogue: what can be ordered and at what price. It is data, a
//! JSON file at `CATALOGUE_PATH`, validated on load and re-read when it changes
//! ([`Watcher`]); [`Prices`] holds the current version and the ones it replaced
//! within [`RETAINED_FOR`], and prices every order against them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::StatusCode;
use order_contract::{ContractError, LineItem, Order, OrderRequest};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::problem::Problem;

/// How long a replaced catalogue's prices are still accepted (unless
/// [`Prices::retain_for`] says otherwise). A client that got no answer (a 503,
/// a lost connection) retries the same body under the same `order_id`; it may
/// already be queued, so refusing it for a price changed in between would make
/// the customer order again under a new id. The page's retries are seconds to
/// minutes apart. The producer cannot tell a retry from a new order, so any
/// order at a price replaced this recently is accepted: the customer pays what
/// the page showed.
pub const RETAINED_FOR: Duration = Duration::from_secs(15 * 60);

/// How often [`Watcher::run`] reads the file to see whether it changed.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);

/// One version of the catalogue, as the file holds it and `GET /catalogue` serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Catalogue {
    /// Every price is in this currency (ISO 4217), and so is every order.
    #[schema(example = "EUR")]
    pub currency: String,
    pub items: Vec<CatalogueItem>,
    /// Names this version of the catalogue, for the record.
    #[schema(example = "2026-12-06.1")]
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogueItem {
    #[schema(example = "NOTEBOOK-A5")]
    pub sku: String,
    #[schema(example = "Notebook, A5, dotted")]
    pub name: String,
    #[schema(example = 1299)]
    pub unit_price_cents: u32,
}

/// Why a catalogue file was refused; each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum InvalidCatalogue {
    #[error("cannot read {path}: {source}; check CATALOGUE_PATH and the file's permissions")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "not a catalogue: {0}; it must be a JSON object with currency, version and items \
         (each with sku, name and unit_price_cents) and nothing else"
    )]
    Json(#[from] serde_json::Error),
    #[error("version is empty: give this version of the catalogue a name")]
    NoVersion,
    #[error("items is empty: a catalogue lists at least one item")]
    NoItems,
    #[error("{field}: {message}")]
    Field { field: String, message: String },
    #[error("items[{index}].sku {sku:?} is listed twice: every SKU appears once")]
    DuplicateSku { index: usize, sku: String },
}

impl Catalogue {
    /// Parses and validates a catalogue: a version, at least one item, names,
    /// SKUs unique, and currency, SKUs and prices by the order contract's rules.
    pub fn parse(json: &str) -> Result<Self, InvalidCatalogue> {
        let catalogue: Self = serde_json::from_str(json)?;
        if catalogue.version.trim().is_empty() {
            return Err(InvalidCatalogue::NoVersion);
        }
        // Every order carries it to the consumer, which holds it to this rule.
        if order_contract::message::check_catalogue_version(&catalogue.version).is_err() {
            return Err(InvalidCatalogue::Field {
                field: "version".into(),
                message: "must be 1 to 64 printable ASCII characters".into(),
            });
        }
        if catalogue.items.is_empty() {
            return Err(InvalidCatalogue::NoItems);
        }
        for (index, item) in catalogue.items.iter().enumerate() {
            let field = |name: &str| format!("items[{index}].{name}");
            if item.name.trim().is_empty() {
                return Err(InvalidCatalogue::Field {
                    field: field("name"),
                    message: "is empty: every item needs the name customers see".into(),
                });
            }
            // The contract's own rules, so that every catalogue line can be ordered.
            let line = order_contract::order::LineItemRequest {
                sku: item.sku.clone(),
                quantity: 1,
                unit_price_cents: i64::from(item.unit_price_cents),
            };
            let request = OrderRequest {
                order_id: uuid::Uuid::nil(),
                customer_id: Some("catalogue".into()),
                currency: catalogue.currency.clone(),
                items: vec![line],
            };
            if let Err(err) = Order::try_from(request) {
                return Err(contract_field(err, index));
            }
            if catalogue.items[..index].iter().any(|i| i.sku == item.sku) {
                return Err(InvalidCatalogue::DuplicateSku {
                    index,
                    sku: item.sku.clone(),
                });
            }
        }
        Ok(catalogue)
    }

    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<Self, InvalidCatalogue> {
        let text = std::fs::read_to_string(path).map_err(|source| InvalidCatalogue::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text)
    }

    fn price_of(&self, sku: &str) -> Option<u32> {
        self.items
            .iter()
            .find(|item| item.sku == sku)
            .map(|item| item.unit_price_cents)
    }
}

/// A contract error about the one-line order of item `index`, about that item.
fn contract_field(err: ContractError, index: usize) -> InvalidCatalogue {
    let field = err
        .field()
        .unwrap_or_default()
        .replacen("items[0]", &format!("items[{index}]"), 1);
    // The contract writes "`field` message".
    let message = err.to_string();
    let message = message
        .strip_prefix(&format!("`{}` ", err.field().unwrap_or_default()))
        .unwrap_or(&message)
        .to_owned();
    InvalidCatalogue::Field { field, message }
}

/// Why an order's prices were not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unpriced {
    /// No catalogue was ever valid.
    NoCatalogue,
    /// The order's currency is not the catalogue's.
    Currency { current: Arc<Catalogue> },
    /// Line `index`'s SKU is in no catalogue of the window.
    UnknownSku {
        index: usize,
        current: Arc<Catalogue>,
    },
    /// Line `index`'s price is no catalogue's of the window.
    Stale {
        index: usize,
        current: Arc<Catalogue>,
    },
}

/// The current catalogue and those it replaced within [`RETAINED_FOR`]; clones share them.
#[derive(Debug, Clone, Default)]
pub struct Prices(Arc<RwLock<Versions>>);

#[derive(Debug)]
struct Versions {
    current: Option<Arc<Catalogue>>,
    /// Replaced versions, each with when it stopped being current.
    replaced: Vec<(Arc<Catalogue>, Instant)>,
    /// How long a replaced version stays acceptable.
    retained_for: Duration,
}

impl Default for Versions {
    fn default() -> Self {
        Self {
            current: None,
            replaced: Vec::new(),
            retained_for: RETAINED_FOR,
        }
    }
}

impl Prices {
    /// With `catalogue` current.
    pub fn new(catalogue: Catalogue) -> Self {
        let prices = Self::default();
        prices.replace(catalogue);
        prices
    }

    /// Makes `catalogue` current; the one it replaces stays acceptable for
    /// [`RETAINED_FOR`].
    pub fn replace(&self, catalogue: Catalogue) {
        let mut versions = self
            .0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if versions.current.as_deref() == Some(&catalogue) {
            return;
        }
        let now = Instant::now();
        let retained_for = versions.retained_for;
        versions
            .replaced
            .retain(|(_, since)| now.duration_since(*since) < retained_for);
        if let Some(old) = versions.current.replace(Arc::new(catalogue)) {
            versions.replaced.push((old, now));
        }
    }

    /// Accepts replaced prices for `retained_for` from now on (tests shorten it).
    pub fn retain_for(&self, retained_for: Duration) {
        self.0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .retained_for = retained_for;
    }

    /// The catalogue in use, if one was ever valid.
    pub fn current(&self) -> Option<Arc<Catalogue>> {
        self.read().current.clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Versions> {
        self.0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Accepts `order` when the current catalogue, or one replaced within
    /// [`RETAINED_FOR`] (a retried body was priced by the version its page
    /// showed), prices every line of it, and names that version (the newest
    /// such). Lines priced by different versions are stale: no page showed them.
    pub fn check(&self, order: &Order) -> Result<String, Unpriced> {
        let versions = self.read();
        let Some(current) = versions.current.clone() else {
            return Err(Unpriced::NoCatalogue);
        };
        let now = Instant::now();
        let window: Vec<&Catalogue> = std::iter::once(&*current)
            .chain(
                versions
                    .replaced
                    .iter()
                    .filter(|(_, since)| now.duration_since(*since) < versions.retained_for)
                    .map(|(catalogue, _)| &**catalogue),
            )
            .filter(|catalogue| catalogue.currency == order.currency())
            .collect();
        if window.is_empty() {
            return Err(Unpriced::Currency { current });
        }
        // A page shows one version: the newest that prices every line is the one.
        let prices_all = |catalogue: &&Catalogue| {
            order
                .items()
                .iter()
                .all(|line| catalogue.price_of(&line.sku) == Some(line.unit_price_cents))
        };
        if let Some(catalogue) = window.iter().copied().find(prices_all) {
            return Ok(catalogue.version.clone());
        }
        let known = |line: &LineItem| window.iter().any(|c| c.price_of(&line.sku).is_some());
        if let Some(index) = order.items().iter().position(|line| !known(line)) {
            return Err(Unpriced::UnknownSku { index, current });
        }
        let index = order
            .items()
            .iter()
            .position(|line| window[0].price_of(&line.sku) != Some(line.unit_price_cents))
            .unwrap_or_default();
        Err(Unpriced::Stale { index, current })
    }
}

impl From<Unpriced> for Problem {
    fn from(unpriced: Unpriced) -> Self {
        match unpriced {
            Unpriced::NoCatalogue => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "The shop's prices are not available right now, so no order can be priced; \
                 nothing was queued. Try again later.",
            )
            .with_retry_after(crate::routes::RETRY_AFTER_SECS),
            Unpriced::Currency { current } => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "The shop prices in {}; send the order in that currency (GET /catalogue).",
                    current.currency
                ),
            )
            .with_field("currency"),
            Unpriced::UnknownSku { index, .. } => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "The shop sells nothing under this SKU; GET /catalogue lists what it sells.",
            )
            .with_field(format!("items[{index}].sku")),
            Unpriced::Stale { index, current } => Problem::new(
                StatusCode::CONFLICT,
                "A price has changed since this order was made; nothing was queued. The current \
                 prices are in `catalogue`: show them and send the order again at those prices.",
            )
            .with_field(format!("items[{index}].unit_price_cents"))
            .with_catalogue(current),
        }
    }
}

/// The catalogue file and what was last read from it: loads it into
/// [`Prices`] at start ([`Watcher::start`]) and whenever its bytes change
/// ([`Watcher::run`]). A file that fails validation is logged (what to fix) and
/// counted (`producer_catalogue_invalid`), and the last valid catalogue stays in use.
#[derive(Debug)]
pub struct Watcher {
    path: PathBuf,
    prices: Prices,
    metrics: Metrics,
    last: Seen,
}

/// What the last look at the file found.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Nothing,
    Unreadable,
    Bytes(Vec<u8>),
}

impl Watcher {
    /// Loads `path` now; with no valid catalogue there, the prices are empty
    /// (the producer is not ready) until one is.
    pub fn start(path: PathBuf, metrics: Metrics) -> Self {
        let mut watcher = Self {
            path,
            prices: Prices::default(),
            metrics,
            last: Seen::Nothing,
        };
        watcher.check();
        watcher
    }

    /// The prices it keeps up to date.
    pub fn prices(&self) -> Prices {
        self.prices.clone()
    }

    /// Looks at the file every `every`, until dropped.
    pub async fn run(mut self, every: Duration) {
        let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.check();
        }
    }

    /// Reads the file (a few kilobytes: in place, not on the blocking pool)
    /// and loads it if it changed since the last look.
    pub(crate) fn check(&mut self) {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(source) => {
                if self.last != Seen::Unreadable {
                    let path = self.path.clone();
                    self.refused(&InvalidCatalogue::Read { path, source });
                    self.last = Seen::Unreadable;
                }
                return;
            }
        };
        if matches!(&self.last, Seen::Bytes(last) if *last == bytes) {
            return;
        }
        let parsed = std::str::from_utf8(&bytes)
            .map_err(|err| InvalidCatalogue::Field {
                field: "the file".into(),
                message: format!("is not UTF-8 ({err}); save it as UTF-8 JSON"),
            })
            .and_then(Catalogue::parse);
        match parsed {
            Ok(catalogue) => {
                self.metrics.catalogue_valid(true);
                tracing::info!(
                    path = %self.path.display(),
                    version = %catalogue.version,
                    items = catalogue.items.len(),
                    "catalogue loaded"
                );
                self.prices.replace(catalogue);
            }
            Err(err) => self.refused(&err),
        }
        self.last = Seen::Bytes(bytes);
    }

    fn refused(&self, err: &InvalidCatalogue) {
        self.metrics.catalogue_valid(false);
        tracing::error!(
            path = %self.path.display(),
            error = %err,
            "catalogue refused, the last valid one stays in use: fix the file and save it again"
        );
    }
}

#[cfg(feature = "fixtures")]
pub mod fixtures;
#[cfg(test)]
mod tests;
