//! The order page in a real browser: Debian's chromium, headless, driven through
//! chromedriver (WebDriver) against the whole local stack, producer to PostgreSQL.
//!
//! Each test starts its own chromedriver on a free port, with a fresh profile,
//! and ends it (and the browser it started) by process group at the end. Every
//! test fails on any error in the browser's console.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

mod stack;
use fantoccini::actions::{
    InputSource, KeyAction, KeyActions, MOUSE_BUTTON_LEFT, MouseActions, PointerAction,
};
use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use stack::Stack;
use testkit::{PostgresServer, QueueSettings, eventually, free_port};

/// The longest one browser test may take, start to finish.
const TEST_BOUND: Duration = Duration::from_secs(120);
/// The longest the page may take to show an outcome, or the stack to store an order.
const WAIT: Duration = Duration::from_secs(20);

/// The 503 message, word for word as the issue asks for it.
const BUSY: &str =
    "We are busy: your order may not have been placed yet. Try again: it will not be placed twice";

/// What the page keeps in sessionStorage while an order's outcome is unknown.
const PENDING_KEY: &str = "order-page.pending";

/// Flags without which chromium hangs on this network-less machine (it keeps
/// retrying refused connections to Google's services) or needs a sandbox.
const CHROMIUM_FLAGS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// Runs `test` within [`TEST_BOUND`]: a hung browser fails the test instead of
/// holding up the whole run.
async fn bounded(test: impl Future<Output = ()>) {
    tokio::time::timeout(TEST_BOUND, test)
        .await
        .expect("the browser test finishes within its bound");
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// A directory of this test's own under the system's temporary directory.
fn temp_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(testkit::unique_name(prefix));
    std::fs::create_dir_all(&dir).expect("create a temporary directory");
    dir
}

/// Sends SIGKILL to the process group `pgid` (a child started as a group leader,
/// with whatever it started), then reaps the child.
fn kill_group(child: &mut Child) {
    let pgid = child.id();
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// chromedriver on a free port; it starts chromium in its own process group.
struct Chromedriver {
    child: Child,
    url: String,
    profile: PathBuf,
}

impl Chromedriver {
    async fn start() -> Self {
        use std::os::unix::process::CommandExt;
        let port = free_port();
        let child = Command::new(env_or("TEST_CHROMEDRIVER", "chromedriver"))
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // A group of its own, so that ending it ends the browser it started.
            .process_group(0)
            .spawn()
            .expect("start chromedriver (scripts/test installs Debian's chromium-driver)");
        let driver = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            profile: temp_dir("chromium-profile"),
        };
        let http = reqwest::Client::new();
        let status_url = format!("{}/status", driver.url);
        eventually("chromedriver to answer /status", WAIT, || async {
            match http.get(&status_url).send().await {
                Ok(response) => match response.json::<Value>().await {
                    Ok(status) if status["value"]["ready"] == true => Ok(()),
                    other => Err(format!("{other:?}")),
                },
                Err(err) => Err(err.to_string()),
            }
        })
        .await;
        driver
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        kill_group(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// One headless chromium session with its console recorded.
struct Browser {
    client: Client,
    driver: Chromedriver,
    /// Every console entry read so far (chromedriver hands each out once).
    console: Vec<Value>,
}

impl Browser {
    async fn start() -> Self {
        let driver = Chromedriver::start().await;
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| (*f).to_owned()).collect();
        args.push(format!("--user-data-dir={}", driver.profile.display()));
        args.push("--window-size=1280,900".to_owned());
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": env_or("TEST_CHROMIUM", "/usr/bin/chromium"),
                "args": args,
            },
            // Keeps the console, for the check that nothing went wrong.
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object literal")
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&driver.url)
            .await
            .expect("chromedriver starts a chromium session");
        Self {
            client,
            driver,
            console: Vec::new(),
        }
    }

    /// Opens the page and awaits its items, rendered from `GET /catalogue`.
    async fn open(&self, url: &str) {
        self.client.goto(url).await.expect("open the page");
        self.visible("#item-list .item").await;
        self.record_requests().await;
    }

    /// Records the page's requests from now on, as `METHOD path`, for
    /// [`requests`](Self::requests) (Resource Timing has no method, and
    /// Chromium gives no entry for a 404).
    async fn record_requests(&self) {
        self.script(
            "const send = window.fetch; window.requested = []; \
             window.fetch = (url, options) => { \
               window.requested.push(((options && options.method) || 'GET') + ' ' + url); \
               return send(url, options); }",
        )
        .await;
    }

    /// How many `request`s (`METHOD path`) the page has made since they were recorded.
    async fn requests(&self, request: &str) -> u64 {
        let js = format!("return window.requested.filter(r => r === {request:?}).length");
        self.script(&js).await.as_u64().expect("a count")
    }

    async fn find(&self, css: &str) -> Element {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|err| panic!("find {css}: {err}"))
    }

    /// Awaits an element that is shown.
    async fn visible(&self, css: &str) -> Element {
        eventually(&format!("{css} to be shown"), WAIT, || async {
            let element = self
                .client
                .find(Locator::Css(css))
                .await
                .map_err(|e| e.to_string())?;
            match element.is_displayed().await {
                Ok(true) => Ok(element),
                state => Err(format!("displayed: {state:?}")),
            }
        })
        .await
    }

    async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.expect("read the text")
    }

    async fn script(&self, js: &str) -> Value {
        self.client
            .execute(js, vec![])
            .await
            .unwrap_or_else(|err| panic!("run {js}: {err}"))
    }

    async fn type_into(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.expect("clear the field");
        field.send_keys(text).await.expect("type into the field");
    }

    /// Presses keys on whatever has the focus, as a person at a keyboard would.
    async fn press(&self, keys: &[char]) {
        let mut actions = KeyActions::new("keyboard".to_owned());
        for key in keys {
            actions = actions
                .then(KeyAction::Down { value: *key })
                .then(KeyAction::Up { value: *key });
        }
        self.client
            .perform_actions(actions)
            .await
            .expect("press the keys");
    }

    /// The id of the focused element.
    async fn focused(&self) -> String {
        let id = self.script("return document.activeElement.id").await;
        id.as_str().unwrap_or_default().to_owned()
    }

    /// Two clicks in a row at the centre of `css`, as one pointer sequence.
    async fn double_click(&self, css: &str) {
        let element = self.find(css).await;
        let mut mouse = MouseActions::new("mouse".to_owned()).then(PointerAction::MoveToElement {
            element,
            duration: None,
            x: 0.0,
            y: 0.0,
        });
        for _ in 0..2 {
            mouse = mouse
                .then(PointerAction::Down {
                    button: MOUSE_BUTTON_LEFT,
                })
                .then(PointerAction::Up {
                    button: MOUSE_BUTTON_LEFT,
                });
        }
        self.client
            .perform_actions(mouse)
            .await
            .expect("double-click");
    }

    /// What the page keeps in sessionStorage (`null` when nothing).
    async fn pending(&self) -> Value {
        let js = format!("return JSON.parse(sessionStorage.getItem({PENDING_KEY:?}))");
        self.script(&js).await
    }

    /// The order id the page holds for the order whose outcome is unknown.
    async fn pending_order_id(&self) -> String {
        let js = format!("return JSON.parse(sessionStorage.getItem({PENDING_KEY:?})).orderId");
        self.script(&js)
            .await
            .as_str()
            .expect("an order id in sessionStorage")
            .to_owned()
    }

    /// Sets the viewport (not the window) to `width`×`height` CSS pixels.
    async fn viewport(&self, width: u32, height: u32) {
        self.client
            .set_window_size(width, height)
            .await
            .expect("resize");
        let inner = self
            .script("return [window.innerWidth, window.innerHeight]")
            .await;
        let read =
            |i: usize| u32::try_from(inner[i].as_u64().expect("a size")).expect("a small size");
        let (inner_width, inner_height) = (read(0), read(1));
        if (inner_width, inner_height) != (width, height) {
            // The window has borders in some modes: grow it by their size.
            self.client
                .set_window_size(2 * width - inner_width, 2 * height - inner_height)
                .await
                .expect("resize");
        }
    }

    /// No caret, focus ring or hover colour in the pictures: they would differ
    /// from run to run. The pointer rests on the banner, and the button's hover
    /// transition is awaited to its end.
    async fn settle_for_pictures(&self) {
        self.script("document.activeElement.blur()").await;
        let corner = MouseActions::new("mouse".to_owned()).then(PointerAction::MoveTo {
            duration: None,
            x: 0.0,
            y: 0.0,
        });
        self.client
            .perform_actions(corner)
            .await
            .expect("move the pointer");
        let button = self.find("#place-order").await;
        eventually("the button's own colour", WAIT, || async {
            match button.css_value("background-color").await {
                Ok(colour) if colour == "rgba(29, 78, 216, 1)" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }

    async fn screenshot(&self, path: &Path) {
        let png = self.client.screenshot().await.expect("a screenshot");
        std::fs::create_dir_all(path.parent().expect("a directory")).expect("create docs/");
        std::fs::write(path, png).expect("write the screenshot");
    }

    /// Reads the console entries chromedriver has gathered since the last read.
    async fn read_console(&mut self) {
        let session = self
            .client
            .session_id()
            .await
            .expect("the session id")
            .expect("a session");
        let url = format!("{}/session/{session}/se/log", self.driver.url);
        let answer: Value = reqwest::Client::new()
            .post(url)
            .json(&json!({ "type": "browser" }))
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .expect("a JSON answer");
        let entries = answer["value"].as_array().expect("log entries").clone();
        self.console.extend(entries);
    }

    /// Fails on any error in the console, except those `expected` matches (the
    /// browser logs every response with an error status, wanted or not), then
    /// ends the session.
    async fn finish(mut self, expected: impl Fn(&str) -> bool) {
        self.read_console().await;
        let errors: Vec<&Value> = self
            .console
            .iter()
            .filter(|entry| entry["level"] == "SEVERE")
            .filter(|entry| !expected(entry["message"].as_str().unwrap_or_default()))
            .collect();
        assert!(
            errors.is_empty(),
            "errors in the browser console: {errors:#?}"
        );
        self.client.close().await.expect("end the session");
    }
}

/// Fills the form: a customer number and a quantity per SKU.
async fn fill(browser: &Browser, customer: &str, quantities: &[(&str, i32)]) {
    browser.type_into("#customer-id", customer).await;
    for (sku, quantity) in quantities {
        browser
            .type_into(&format!("#qty-{sku}"), &quantity.to_string())
            .await;
    }
}

async fn place(browser: &Browser) {
    browser
        .find("#place-order")
        .await
        .click()
        .await
        .expect("click Place order");
}

/// Awaits the problem's detail in `#{slot}-error`; the field `focused` has the focus.
async fn assert_refused(browser: &Browser, slot: &str, focused: &str, detail: &str) {
    let error = browser.visible(&format!("#{slot}-error")).await;
    let shown = error.text().await.expect("the detail");
    assert!(shown.starts_with(detail), "{shown}");
    assert_eq!(browser.focused().await, focused);
    if slot != "items" {
        let field = browser.find(&format!("#{slot}")).await;
        assert_eq!(
            field.attr("aria-invalid").await.expect("attr").as_deref(),
            Some("true"),
            "{slot}"
        );
    }
}

/// Awaits "Order received" and returns the order id the page shows.
async fn await_received(browser: &Browser) -> String {
    let title = browser.visible("#received-title").await;
    assert_eq!(title.text().await.expect("title"), "Order received");
    browser.text("#received-id").await
}

/// The stored order's customer, items and total.
async fn stored_order(stack: &Stack, order_id: &str) -> (String, Value, i64) {
    let client = stack.db.connect().await;
    let row = client
        .query_one(
            "SELECT customer_id, items, total_cents FROM orders WHERE order_id = $1::text::uuid",
            &[&order_id],
        )
        .await
        .expect("the order is stored");
    (row.get(0), row.get(1), row.get(2))
}

fn docs(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs")
        .join(name)
}

fn no_error_expected(_: &str) -> bool {
    false
}

/// The browser logs every 4xx/5xx answer to the page's fetch as an error.
fn answer_to_orders_with(status: u16) -> impl Fn(&str) -> bool {
    move |message| message.contains("/orders") && message.contains(&format!("status of {status}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_placed_on_the_page_is_stored_in_postgresql_after_a_refusal_is_corrected() {
    bounded(async {
        let mut stack = Stack::start(QueueSettings::default(), None).await;
        stack.start_consumer().await;
        let browser = Browser::start().await;
        browser.open(&stack.producer_url).await;
        assert_eq!(
            browser.script("return document.documentElement.lang").await,
            "en"
        );
        assert_eq!(
            browser.pending().await,
            Value::Null,
            "nothing is kept before an order is sent"
        );

        // Each refusal's detail shows next to the field it names, which gets the focus.
        browser.type_into("#customer-id", "cust-42").await;
        place(&browser).await;
        assert_refused(&browser, "items", "qty-NOTEBOOK-A5", "`items` must hold").await;

        fill(
            &browser,
            "cust-42",
            &[("NOTEBOOK-A5", 2), ("MUG-STONEWARE", -1)],
        )
        .await;
        place(&browser).await;
        // The second line sent is the mug's, whatever its row.
        assert_refused(
            &browser,
            "qty-MUG-STONEWARE",
            "qty-MUG-STONEWARE",
            "`items[1].quantity` must be between 1 and 10000, not -1",
        )
        .await;

        fill(&browser, "cust 42", &[("MUG-STONEWARE", 1)]).await;
        assert_eq!(browser.text("#total").await, "€35.48");
        place(&browser).await;
        assert_refused(
            &browser,
            "customer-id",
            "customer-id",
            "`customer_id` must be",
        )
        .await;
        assert_eq!(
            browser.pending().await,
            Value::Null,
            "a refused order's fate is known: nothing is kept"
        );

        browser.type_into("#customer-id", "cust-42").await;
        assert!(
            !browser
                .find("#customer-id-error")
                .await
                .is_displayed()
                .await
                .expect("shown?")
        );
        browser.settle_for_pictures().await;
        browser.viewport(390, 844).await;
        browser.screenshot(&docs("order-page-phone.png")).await;
        browser.viewport(1280, 900).await;
        browser.screenshot(&docs("order-page-desktop.png")).await;

        place(&browser).await;
        let order_id = await_received(&browser).await;
        assert_eq!(browser.focused().await, "received-title");

        stack.await_stored(1, WAIT).await;
        assert_eq!(
            stack.stored_order_ids().await,
            [order_id.clone()].into_iter().collect()
        );
        let (customer, items, total) = stored_order(&stack, &order_id).await;
        assert_eq!(customer, "cust-42");
        assert_eq!(
            items,
            json!([
                {"sku": "NOTEBOOK-A5", "quantity": 2, "unit_price_cents": 1299},
                {"sku": "MUG-STONEWARE", "quantity": 1, "unit_price_cents": 950},
            ])
        );
        assert_eq!(total, 3548);

        // The next cart starts with nothing kept: it gets an id of its own when sent.
        browser
            .find("#new-order")
            .await
            .click()
            .await
            .expect("click");
        browser.visible("#place-order").await;
        assert_eq!(browser.pending().await, Value::Null);

        browser.finish(answer_to_orders_with(422)).await;
        stack.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_click_on_place_order_sends_one_request_and_stores_one_order() {
    bounded(async {
        let mut stack = Stack::start(QueueSettings::default(), None).await;
        stack.start_consumer().await;
        let browser = Browser::start().await;
        browser.open(&stack.producer_url).await;
        fill(&browser, "cust-double", &[("PEN-GEL-BLACK", 3)]).await;

        browser.double_click("#place-order").await;
        let order_id = await_received(&browser).await;
        assert_eq!(browser.requests("POST /orders").await, 1);
        stack.await_stored(1, WAIT).await;
        assert_eq!(
            stack.stored_order_ids().await,
            [order_id].into_iter().collect()
        );

        browser.finish(no_error_expected).await;
        stack.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keyboard_alone_can_place_an_order_in_a_sensible_focus_order() {
    bounded(async {
        let mut stack = Stack::start(QueueSettings::default(), None).await;
        stack.start_consumer().await;
        let browser = Browser::start().await;
        browser.open(&stack.producer_url).await;
        let tab = char::from(Key::Tab);

        browser.press(&[tab]).await;
        assert_eq!(browser.focused().await, "customer-id");
        browser
            .press(&"cust-keys".chars().collect::<Vec<_>>())
            .await;
        browser.press(&[tab]).await;
        assert_eq!(browser.focused().await, "qty-NOTEBOOK-A5");
        let up = char::from(Key::Up);
        browser.press(&[up, up]).await;
        for next in ["qty-PEN-GEL-BLACK", "qty-MUG-STONEWARE", "qty-TOTE-CANVAS"] {
            browser.press(&[tab]).await;
            assert_eq!(browser.focused().await, next);
        }
        browser.press(&[up]).await;
        assert_eq!(browser.text("#total").await, "€40.98");
        browser.press(&[tab]).await;
        assert_eq!(browser.focused().await, "place-order");
        browser.press(&[char::from(Key::Enter)]).await;

        let order_id = await_received(&browser).await;
        assert_eq!(browser.focused().await, "received-title");
        stack.await_stored(1, WAIT).await;
        let (customer, items, total) = stored_order(&stack, &order_id).await;
        assert_eq!(customer, "cust-keys");
        assert_eq!(items.as_array().map(Vec::len), Some(2), "{items}");
        assert_eq!(total, 4098);

        browser.finish(no_error_expected).await;
        stack.shutdown().await;
    })
    .await;
}

/// Rows in `orders` and in `order_conflicts`.
async fn orders_and_conflicts(stack: &Stack) -> (i64, i64) {
    let row = stack
        .db
        .connect()
        .await
        .query_one(
            "SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM order_conflicts)",
            &[],
        )
        .await
        .expect("count the orders and the conflicts");
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_tab_opened_from_the_page_places_an_order_of_its_own() {
    bounded(async {
        let mut stack = Stack::start(QueueSettings::default(), None).await;
        stack.start_consumer().await;
        let browser = Browser::start().await;
        browser.open(&stack.producer_url).await;
        let first = browser.client.window().await.expect("the first tab");
        // Opened by the page, as "Duplicate tab" does: the browser copies the
        // page's sessionStorage into the new tab.
        browser.script("window.open(location.href)").await;
        let second = eventually("the second tab", WAIT, || async {
            let windows = browser.client.windows().await.map_err(|e| e.to_string())?;
            windows
                .into_iter()
                .find(|window| *window != first)
                .ok_or_else(|| "one tab".to_owned())
        })
        .await;

        browser
            .client
            .switch_to_window(second)
            .await
            .expect("switch to the second tab");
        browser.visible("#place-order").await;
        fill(&browser, "cust-tab-two", &[("MUG-STONEWARE", 2)]).await;
        place(&browser).await;
        let second_id = await_received(&browser).await;

        browser
            .client
            .switch_to_window(first)
            .await
            .expect("switch back to the first tab");
        fill(&browser, "cust-tab-one", &[("NOTEBOOK-A5", 1)]).await;
        place(&browser).await;
        let first_id = await_received(&browser).await;

        // Each cart ends up a row: in orders, or kept aside as a conflict.
        let (stored, conflicts) = eventually("both carts to reach the database", WAIT, || async {
            match orders_and_conflicts(&stack).await {
                (stored, conflicts) if stored + conflicts == 2 => Ok((stored, conflicts)),
                seen => Err(seen),
            }
        })
        .await;
        assert_eq!(
            (stored, conflicts),
            (2, 0),
            "two orders stored and no conflict (tab ids: {first_id}, {second_id})"
        );
        let (customer, _, total) = stored_order(&stack, &first_id).await;
        assert_eq!((customer.as_str(), total), ("cust-tab-one", 1299));
        let (customer, _, total) = stored_order(&stack, &second_id).await;
        assert_eq!((customer.as_str(), total), ("cust-tab-two", 1900));

        browser.finish(no_error_expected).await;
        stack.shutdown().await;
    })
    .await;
}

/// A LocalStack of this test's own, which it may stop without taking the shared
/// one (and the other tests' queues) with it. Started as `scripts/test` starts
/// the shared one; ended by PID with SIGKILL (after a long poll it ignores
/// SIGTERM), which loses its queues: they live in memory.
struct OwnLocalStack {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl OwnLocalStack {
    async fn start() -> Self {
        let mut localstack = Self {
            child: None,
            port: free_port(),
            dir: temp_dir("localstack"),
        };
        localstack.run().await;
        localstack
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> PathBuf {
        self.dir.join("localstack.log")
    }

    /// Starts it on its port and awaits "Ready." in its log.
    async fn run(&mut self) {
        let python = std::env::var("TEST_LOCALSTACK_PYTHON")
            .unwrap_or_else(|_| format!("{}/../.dev/venv/bin/python", env!("CARGO_MANIFEST_DIR")));
        let log = std::fs::File::create(self.log()).expect("create the LocalStack log");
        let listen = format!("127.0.0.1:{}", self.port);
        // Why each variable: scripts/lib/common.sh, localstack_start.
        let child = Command::new(&python)
            .args(["-m", "localstack.runtime.main"])
            .env("GATEWAY_SERVER", "hypercorn")
            .env("GATEWAY_LISTEN", &listen)
            .env("LOCALSTACK_HOST", &listen)
            .env("DNS_ADDRESS", "0")
            .env("SQS_ENDPOINT_STRATEGY", "path")
            .env("SERVICES", "sqs")
            .env("EAGER_SERVICE_LOADING", "1")
            .env("DISABLE_EVENTS", "1")
            .env("OVERRIDE_IN_DOCKER", "0")
            .env("FILESYSTEM_ROOT", self.dir.join("state"))
            .env("SKIP_SSL_CERT_DOWNLOAD", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("start LocalStack with {python}: {err}"));
        self.child = Some(child);
        let log = self.log();
        eventually(
            "LocalStack to print Ready.",
            Duration::from_secs(60),
            || {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let exited = self
                    .child
                    .as_mut()
                    .and_then(|child| child.try_wait().ok().flatten());
                async move {
                    if let Some(status) = exited {
                        panic!("LocalStack exited during start-up ({status}): {text}");
                    }
                    if text.lines().any(|line| line.starts_with("Ready.")) {
                        Ok(())
                    } else {
                        Err(text.lines().last().unwrap_or_default().to_owned())
                    }
                }
            },
        )
        .await;
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnLocalStack {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_sqs_is_down_the_page_says_so_and_its_retry_places_the_same_order_once() {
    bounded(async {
        let mut localstack = OwnLocalStack::start().await;
        let mut stack = Stack::start_on_sqs(QueueSettings::default(), &localstack.endpoint()).await;
        stack.start_consumer().await;
        let browser = Browser::start().await;
        browser.open(&stack.producer_url).await;
        fill(&browser, "cust-busy", &[("TOTE-CANVAS", 1)]).await;

        localstack.kill();
        place(&browser).await;
        browser.visible("#busy").await;
        assert_eq!(browser.text("#busy-message").await, BUSY);
        // Its outcome unknown, the order is kept with its id.
        let order_id = browser.pending_order_id().await;
        let retry = browser.find("#retry").await;
        assert_eq!(
            retry.attr("aria-disabled").await.expect("attr").as_deref(),
            Some("true"),
            "the retry waits for Retry-After"
        );
        assert_eq!(browser.focused().await, "retry");
        assert!(
            browser
                .text("#retry-wait")
                .await
                .starts_with("You can try again in")
        );

        // A reload keeps the order, its id and the message.
        browser.client.refresh().await.expect("reload");
        browser.visible("#busy").await;
        assert_eq!(browser.text("#busy-message").await, BUSY);
        assert_eq!(browser.pending_order_id().await, order_id);
        assert_eq!(
            browser
                .find("#customer-id")
                .await
                .prop("value")
                .await
                .expect("value")
                .as_deref(),
            Some("cust-busy")
        );

        // The emulator comes back empty: the queue is made again under its name.
        localstack.run().await;
        let name = stack
            .queues
            .queue_url
            .rsplit('/')
            .next()
            .expect("a queue name");
        let created = stack
            .queues
            .sqs
            .create_queue()
            .queue_name(name)
            .send()
            .await
            .expect("create the queue again");
        assert_eq!(created.queue_url(), Some(stack.queues.queue_url.as_str()));

        // Found again: the reload replaced the page's elements.
        let retry = browser.find("#retry").await;
        eventually("the retry button to be usable", WAIT, || async {
            match retry.attr("aria-disabled").await {
                Ok(Some(state)) if state == "false" => Ok(()),
                state => Err(format!("{state:?}")),
            }
        })
        .await;
        retry.click().await.expect("click retry");
        assert_eq!(await_received(&browser).await, order_id);
        stack.await_stored(1, WAIT).await;
        assert_eq!(
            stack.stored_order_ids().await,
            [order_id].into_iter().collect()
        );

        browser.finish(answer_to_orders_with(503)).await;
        stack.shutdown().await;
    })
    .await;
}

/// Writes `catalogue` to the stack's file and awaits `GET /catalogue` serving it.
async fn change_catalogue(stack: &Stack, catalogue: Value) {
    std::fs::write(stack.catalogue_path(), catalogue.to_string()).expect("write the catalogue");
    let url = format!("{}/catalogue", stack.producer_url);
    eventually("the producer to serve the new catalogue", WAIT, || async {
        let served: Value = stack
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        if served == catalogue {
            Ok(())
        } else {
            Err(served.to_string())
        }
    })
    .await;
}

/// A producer with sign-in on, on `stack`'s queue, behind a local-alb playing
/// the template's listener; the URL customers open.
async fn behind_local_alb(stack: &Stack) -> String {
    behind_local_alb_failing(stack, None).await
}

/// As [`behind_local_alb`]; while `failing` is set, the status function fails
/// every invocation (it panics), as a broken release or a crash would, which
/// the load balancer answers `502`.
async fn behind_local_alb_failing(stack: &Stack, failing: Option<Arc<AtomicBool>>) -> String {
    use std::collections::HashMap;

    let bind = || async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let addr = listener.local_addr().expect("address");
        (listener, addr)
    };
    let (alb_tcp, alb) = bind().await;
    let (producer_tcp, producer) = bind().await;
    let verifier = producer::auth::Verifier::new(producer::auth::SignInConfig {
        signer: local_alb::LOCAL_SIGNER.to_owned(),
        key_endpoint: format!("http://{alb}{}", local_alb::KEYS_PATH),
        sign_out_url: local_alb::LOGOUT_PATH.to_owned(),
    })
    .expect("verifier");
    let queue = producer::SqsQueue::new(
        stack.queues.sqs.config().clone(),
        &stack.queues.queue_url,
        Duration::from_secs(5),
    );
    let state = producer::AppState::new(Arc::new(queue), Duration::from_secs(10))
        .with_prices(stack.prices.clone())
        .with_sign_in(Some(Arc::new(verifier)));
    tokio::spawn(producer::serve(producer_tcp, state, std::future::pending()));

    let template = infra::Document::from_file(&format!(
        "{}/../infra/template.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("template");
    let listener = local_alb::rules::Listener::from_document(&template).expect("rules");
    let keys = local_alb::Keys::load_or_create(
        &temp_dir("local-alb").join("signing-key.p8"),
        local_alb::LOCAL_SIGNER,
    )
    .expect("a key");
    let mut targets = HashMap::from([(
        "ProducerTargetGroup".to_owned(),
        local_alb::Target::Http(format!("http://{producer}")),
    )]);
    // GET /orders* goes to the status function, as the template's rule says,
    // reading as the reader.
    let database = consumer_lambda::DatabaseConfig::from_url(
        &stack.db.url_as(consumer_lambda::migrations::DEFAULT_READER),
    )
    .expect("URL");
    match failing {
        None => targets.extend(
            local_alb::lambda_targets(&template, database)
                .await
                .expect("the status function's pool"),
        ),
        Some(failing) => {
            let pool = status::pool(database).await.expect("a pool");
            for (group, multi_value_headers) in local_alb::rules::lambda_target_groups(&template) {
                let (pool, failing) = (pool.clone(), failing.clone());
                let function = local_alb::Lambda::new(multi_value_headers, move |event| {
                    let (pool, failing) = (pool.clone(), failing.clone());
                    async move {
                        assert!(!failing.load(Ordering::SeqCst), "the status function fails");
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |since| since.as_secs() as i64);
                        status::handle(
                            &pool,
                            local_alb::LOCAL_SIGNER,
                            &event,
                            now,
                            status::DEADLINE,
                        )
                        .await
                    }
                });
                targets.insert(group, local_alb::Target::Lambda(function));
            }
        }
    }
    let router = local_alb::router(listener, targets, keys).expect("local-alb");
    tokio::spawn(local_alb::serve(alb_tcp, router, std::future::pending()));
    format!("http://{alb}")
}

/// Opens the page at `url` (local-alb's), which sends the browser to its
/// sign-in page, signs in as `customer`, and awaits the page's catalogue.
async fn sign_in(browser: &Browser, url: &str, customer: &str) {
    browser.client.goto(url).await.expect("open the page");
    browser.type_into("#customer", customer).await;
    browser
        .find("button[type=submit]")
        .await
        .click()
        .await
        .expect("sign in");
    browser.visible("#item-list .item").await;
    let name = browser.visible("#who-name").await.text().await;
    assert_eq!(name.expect("the name"), customer);
    let customer_field = browser.find("#customer-field").await;
    eventually("the customer number to go", WAIT, || async {
        match customer_field.is_displayed().await {
            Ok(false) => Ok(()),
            state => Err(format!("displayed: {state:?}")),
        }
    })
    .await;
    browser.record_requests().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_in_customer_orders_at_the_catalogues_prices_and_confirms_a_price_changed_meanwhile()
 {
    bounded(async {
        let mut stack = Stack::start(QueueSettings::default(), None).await;
        // A replaced price is refused at once, as it is 15 minutes after a change.
        stack.prices.retain_for(Duration::ZERO);
        let item = |sku: &str, name: &str, cents: u32| json!({"sku": sku, "name": name, "unit_price_cents": cents});
        let catalogue = |version: &str, notebook: u32| json!({
            "currency": "EUR",
            "items": [item("NOTEBOOK-A5", "Notebook, A5, dotted", notebook), item("STICKERS", "Sticker sheet", 300)],
            "version": version,
        });
        // Items and prices the page cannot know but from GET /catalogue.
        change_catalogue(&stack, catalogue("test-1", 1349)).await;
        let url = behind_local_alb(&stack).await;
        let browser = Browser::start().await;
        sign_in(&browser, &url, "cust-browser").await;
        assert_eq!(browser.text("label[for=qty-STICKERS]").await, "Sticker sheet");
        assert_eq!(browser.text("#price-NOTEBOOK-A5").await, "€13.49");
        assert_eq!(browser.text("#price-STICKERS").await, "€3.00");
        browser.type_into("#qty-NOTEBOOK-A5", "2").await;
        browser.type_into("#qty-STICKERS", "1").await;
        assert_eq!(browser.text("#total").await, "€29.98");

        // The price changes while the page is open: the order is refused, nothing queued.
        change_catalogue(&stack, catalogue("test-2", 1399)).await;
        place(&browser).await;
        browser.visible("#repriced").await;
        assert_eq!(browser.focused().await, "repriced");
        assert_eq!(browser.text("#price-NOTEBOOK-A5").await, "€13.99");
        assert_eq!(browser.text("#total").await, "€30.98");
        assert_eq!(browser.text("#place-order").await, "Confirm order at the new prices");
        assert_eq!(stack.queues.depth().await, 0, "nothing is queued before the customer confirms");

        place(&browser).await;
        let order_id = await_received(&browser).await;
        assert_eq!(browser.requests("POST /orders").await, 2);
        stack.start_consumer().await;
        stack.await_stored(1, WAIT).await;
        let (customer, items, total) = stored_order(&stack, &order_id).await;
        assert_eq!(customer, "cust-browser");
        assert_eq!(
            items,
            json!([
                {"sku": "NOTEBOOK-A5", "quantity": 2, "unit_price_cents": 1399},
                {"sku": "STICKERS", "quantity": 1, "unit_price_cents": 300},
            ])
        );
        assert_eq!(total, 3098);

        // Sign-out ends the session: the page asks for a sign-in again.
        browser
            .find("#who a")
            .await
            .click()
            .await
            .expect("sign out");
        browser.visible("#customer").await;
        // The page follows the order: not stored until the consumer started.
        let not_stored_yet = answer_to_orders_with(404);
        browser
            .finish(|m| answer_to_orders_with(409)(m) || not_stored_yet(m))
            .await;
        stack.shutdown().await;
    })
    .await;
}

/// The ids the page gives its next carts, in order, instead of random ones:
/// the pictures stay the same from run to run.
async fn fixed_order_ids(browser: &Browser, ids: &[&str]) {
    let js = format!(
        "const ids = {}; crypto.randomUUID = () => ids.shift();",
        json!(ids)
    );
    browser.script(&js).await;
}

/// Awaits the followed order's `state` (`#received`'s `data-state`) and
/// returns the title the customer reads.
async fn await_state(browser: &Browser, state: &str) -> String {
    eventually(&format!("the order to be shown {state}"), WAIT, || async {
        match browser
            .script("return document.getElementById('received').dataset.state || null")
            .await
        {
            Value::String(shown) if shown == state => Ok(()),
            shown => Err(shown),
        }
    })
    .await;
    browser.text("#state-title").await
}

/// Awaits "Your orders" listing `expected` (state, order id), newest first.
async fn await_listed(browser: &Browser, expected: &[(&str, &str)]) {
    let expected = json!(
        expected
            .iter()
            .map(|(state, id)| format!("{state} {id}"))
            .collect::<Vec<_>>()
    );
    eventually("the list of orders", WAIT, || async {
        let listed = browser
            .script(
                "return Array.from(document.querySelectorAll('#order-list li'), \
                 li => li.dataset.state + ' ' + li.querySelector('.order-id').textContent)",
            )
            .await;
        if listed == expected {
            Ok(())
        } else {
            Err(listed)
        }
    })
    .await;
}

/// A picture of the element `css` for `docs/`, the same from run to run: no
/// focus ring or hover, and every time (the database's clock) shown as one.
/// The focus is put back after.
async fn picture(browser: &Browser, css: &str, name: &str) {
    browser
        .script("window.focusedBeforePicture = document.activeElement")
        .await;
    browser.settle_for_pictures().await;
    browser
        .script("for (const t of document.querySelectorAll('time')) t.textContent = '7 Dec 2026, 10:52'")
        .await;
    let png = browser
        .find(css)
        .await
        .screenshot()
        .await
        .expect("a screenshot");
    std::fs::write(docs(name), png).expect("write the picture");
    browser.script("window.focusedBeforePicture.focus()").await;
}

/// The ids of the three carts below, in the order they are placed.
const FOLLOWED: [&str; 3] = [
    "5b0d6f4e-2c1a-4e8b-9f3d-7a6c5e4b3a21",
    "c8e2a9f0-6d4b-4b7e-8a1c-3f5e2d9b0c47",
    "1f7a3c5e-9b2d-4d6f-8e0a-6c4b2a8e7d15",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_its_202_the_page_follows_the_order_until_stored_even_through_a_database_outage() {
    bounded(async {
        let server = PostgresServer::start().await;
        let mut stack = Stack::start(QueueSettings::default(), Some(&server.admin_url())).await;
        let url = behind_local_alb(&stack).await;
        let browser = Browser::start().await;
        // Phone width, tall enough that no picture is cut and no scroll bar shows.
        browser.viewport(390, 1600).await;
        sign_in(&browser, &url, "cust-follow").await;
        assert_eq!(
            browser
                .visible("#orders-status")
                .await
                .text()
                .await
                .expect("text"),
            "You have no orders yet."
        );
        fixed_order_ids(&browser, &FOLLOWED).await;
        let [first, second, third] = FOLLOWED;

        // On its way until the consumer has stored it: not started yet, the
        // status function answers 404.
        browser.type_into("#qty-NOTEBOOK-A5", "2").await;
        place(&browser).await;
        assert_eq!(await_received(&browser).await, first);
        let looked = format!("GET /orders/{first}");
        eventually("the page to ask for its order", WAIT, || async {
            match browser.requests(&looked).await {
                0 => Err(0),
                _ => Ok(()),
            }
        })
        .await;
        assert_eq!(await_state(&browser, "on-its-way").await, "On its way");
        picture(&browser, "#received", "order-page-on-its-way.png").await;
        stack.start_consumer().await;
        let title = await_state(&browser, "stored").await;
        assert!(title.starts_with("Stored ✓ on "), "{title}");
        // Announced by a live region: the focus stays where the 202 put it.
        let region = browser.find("#order-status").await;
        assert_eq!(
            region.attr("role").await.expect("attr").as_deref(),
            Some("status")
        );
        assert_eq!(browser.focused().await, "received-title");
        await_listed(&browser, &[("stored", first)]).await;
        picture(&browser, "#main", "order-page-stored.png").await;

        // PostgreSQL down: the order is accepted all the same, and the page says the shop is catching up.
        server.stop();
        browser
            .find("#new-order")
            .await
            .click()
            .await
            .expect("click");
        browser.type_into("#qty-MUG-STONEWARE", "1").await;
        place(&browser).await;
        assert_eq!(await_received(&browser).await, second);
        assert_eq!(
            await_state(&browser, "catching-up").await,
            "The shop is catching up; your order is safe"
        );
        picture(&browser, "#received", "order-page-catching-up.png").await;

        // Not stored 5 minutes after its 202: delayed, with what to do. The
        // page's clock moves on, instead of the test waiting.
        browser
            .script("const now = Date.now; Date.now = () => now() + 6 * 60 * 1000")
            .await;
        assert_eq!(
            await_state(&browser, "delayed").await,
            "Delayed: not stored yet"
        );
        assert!(
            browser
                .text("#state-detail")
                .await
                .contains("Do not order again")
        );
        picture(&browser, "#received", "order-page-delayed.png").await;

        // PostgreSQL back: the same page shows the order stored, without a reload.
        server.start_again().await;
        await_state(&browser, "stored").await;
        await_listed(&browser, &[("stored", second), ("stored", first)]).await;

        // An id another customer's order already has: the page's order is kept aside.
        let mut other = e2e::order_request(1, 1);
        other["order_id"] = json!(third);
        assert_eq!(stack.post_order(&other).await.0, 202);
        stack.await_stored(3, WAIT).await;
        browser
            .find("#new-order")
            .await
            .click()
            .await
            .expect("click");
        browser.type_into("#qty-TOTE-CANVAS", "1").await;
        place(&browser).await;
        assert_eq!(await_received(&browser).await, third);
        eventually("the order kept aside", WAIT, || async {
            match orders_and_conflicts(&stack).await {
                (3, 1) => Ok(()),
                seen => Err(seen),
            }
        })
        .await;
        assert_eq!(
            await_state(&browser, "kept-aside").await,
            "Kept aside: not placed"
        );
        await_listed(
            &browser,
            &[("kept-aside", third), ("stored", second), ("stored", first)],
        )
        .await;
        picture(&browser, "#received", "order-page-kept-aside.png").await;
        picture(&browser, "#orders", "order-page-orders.png").await;

        let (not_stored_yet, catching_up) =
            (answer_to_orders_with(404), answer_to_orders_with(503));
        browser
            .finish(|m| not_stored_yet(m) || catching_up(m))
            .await;
        stack.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_status_function_reads_as_catching_up_and_the_order_is_shown_stored_once_it_answers()
 {
    bounded(async {
        let mut stack = Stack::start(QueueSettings::default(), None).await;
        stack.start_consumer().await;
        let failing = Arc::new(AtomicBool::new(true));
        let url = behind_local_alb_failing(&stack, Some(failing.clone())).await;
        let browser = Browser::start().await;
        sign_in(&browser, &url, "cust-502").await;
        browser.type_into("#qty-NOTEBOOK-A5", "1").await;
        place(&browser).await;
        let order_id = await_received(&browser).await;
        // The order is stored, but its status cannot be read: the load
        // balancer's 502 reads as the shop catching up, not as lost.
        stack.await_stored(1, WAIT).await;
        assert_eq!(
            await_state(&browser, "catching-up").await,
            "The shop is catching up; your order is safe"
        );
        assert!(browser.requests(&format!("GET /orders/{order_id}")).await > 0);
        failing.store(false, Ordering::SeqCst);
        let title = await_state(&browser, "stored").await;
        assert!(title.starts_with("Stored ✓ on "), "{title}");
        browser.finish(answer_to_orders_with(502)).await;
        stack.shutdown().await;
    })
    .await;
}
