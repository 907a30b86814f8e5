// The order page: renders the shop's catalogue (GET /catalogue), builds an
// order from it, posts it to /orders under
// an order_id (the idempotency key) of its own, and keeps that id while the
// order's outcome is unknown, so a double click, a retry or a reload never
// places a second order; every new cart gets a fresh id. Signed in, it then
// follows the order (GET /orders/{id}) until the shop has stored it, and lists
// the customer's orders (GET /orders).
"use strict";

(function () {
  const STORE_KEY = "order-page.pending";
  const BUSY = "We are busy: your order may not have been placed yet. Try again: it will not be placed twice";
  const UNREACHABLE = "We could not reach the shop: your order may not have been placed yet. Try again: it will not be placed twice";
  const NO_ANSWER = "We did not get an answer about your order: it may not have been placed yet. Try again: it will not be placed twice";
  const DEFAULT_RETRY_SECS = 5;
  const MAX_RETRY_SECS = 300;
  const REQUEST_TIMEOUT_MS = 30000;
  // Following an order: the first look a second after its 202 (it is usually
  // stored by then), then twice as long each time it is not, up to half a minute.
  const FOLLOW_FIRST_MS = 1000;
  const FOLLOW_MAX_MS = 30000;
  // Stored within seconds normally, and a failed try holds an order back at
  // most a minute: not stored 5 minutes after its 202, it is held up by more
  // than a passing fault, and the customer hears so (the operators are alarmed
  // at 15, OldestMessageAgeAlarmSeconds).
  const DELAYED_AFTER_MS = 5 * 60 * 1000;
  // What the customer reads in each state of a followed order: a title (with
  // the time, once stored) and what it means for them. Each state says itself
  // in words; its colour only repeats it.
  const STATES = {
    "on-its-way": ["On its way",
      "Your order is safe in our queue, on its way to the shop. This page shows when the shop has stored it."],
    "stored": ["Stored ✓",
      "The shop has your order."],
    "catching-up": ["The shop is catching up; your order is safe",
      "The shop’s system cannot be reached just now. Your order waits in our queue and will be stored once it is back: you need not do anything. This page shows when it is stored."],
    "delayed": ["Delayed: not stored yet",
      "We received your order more than 5 minutes ago and the shop has not stored it yet. It is not lost. Do not order again: that would place a second order. Keep your order number, and if this page still says “delayed” in an hour, contact us with it."],
    "kept-aside": ["Kept aside: not placed",
      "This order number was already used for a different order, so this order was kept aside and not placed. To order these items, place them again as a new order: it gets a new number. If you contact us about it, give this order number."],
    "signed-out": ["Sign in again to follow this order",
      "Your sign-in has expired. Your order was received: reload this page and sign in, and it shows under “Your orders” once the shop has stored it."],
  };
  const when = new Intl.DateTimeFormat("en-IE", { dateStyle: "medium", timeStyle: "short" });

  const $ = (id) => document.getElementById(id);
  const form = $("order-form");
  const customer = $("customer-id");
  const list = $("item-list");
  // One <li class="item"> per catalogue item, rendered by showCatalogue.
  let items = [];
  const placeButton = $("place-order");
  const retryButton = $("retry");
  let currency = null;
  let money = null;

  // { orderId, sent, notice, retryAt }: `sent` is the body of a request whose
  // outcome is unknown, `notice` what the page said about it and `retryAt` when
  // it may be sent again. They live in sessionStorage only while that outcome is
  // unknown, so that a reload resends the same order, no sooner than the
  // producer asked. Nothing is kept otherwise: a tab opened from this one gets a
  // copy of sessionStorage, and must not take this cart's id for its own.
  let state = load();
  let sending = false;
  // Whether the shop signs customers in (GET /me): then the order is the
  // signed-in customer's and the page sends no customer number.
  let signedIn = false;
  let retryTimer = null;
  // The quantity input behind each line of the last body sent: `items[2]` in a
  // problem's `field` means the third line sent, not the third row shown.
  let sentInputs = [];
  // After a 409 the order is shown at the new prices; confirming sends it under
  // the same order_id. A 409 queued nothing, but an earlier attempt of this
  // order that got no answer may have been queued: under the same id the
  // consumer keeps a repriced copy aside as a conflict, where a new id would
  // store the order twice.
  let confirming = false;
  // The order shown after its 202: { orderId, receivedAt, waitMs, state }. A
  // newer 202 replaces it, which ends the older one's polling.
  let following = null;

  function load() {
    try {
      const saved = JSON.parse(sessionStorage.getItem(STORE_KEY));
      if (saved && typeof saved.orderId === "string" && saved.sent) return saved;
    } catch (_) { /* storage off or corrupt: start afresh */ }
    return { orderId: null, sent: null };
  }

  function save() {
    try {
      sessionStorage.setItem(STORE_KEY, JSON.stringify(state));
    } catch (_) { /* storage off: the id still lives as long as the page */ }
  }

  function forget() {
    try {
      sessionStorage.removeItem(STORE_KEY);
    } catch (_) { /* nothing stored */ }
  }

  // randomUUID exists only in secure contexts; getRandomValues everywhere.
  function newOrderId() {
    if (crypto.randomUUID) return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const hex = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return [hex.slice(0, 8), hex.slice(8, 12), hex.slice(12, 16), hex.slice(16, 20), hex.slice(20)].join("-");
  }

  // Renders the catalogue's items (built with DOM calls: its text is data, never
  // markup), keeping the quantities already typed and marking changed prices.
  function showCatalogue(catalogue) {
    currency = catalogue.currency;
    money = new Intl.NumberFormat("en-IE", { style: "currency", currency });
    const typed = new Map(items.map((item) => [item.dataset.sku, item.querySelector(".qty").value]));
    const shown = new Map(items.map((item) => [item.dataset.sku, item.dataset.priceCents]));
    items = catalogue.items.map((entry) => {
      const id = "qty-" + entry.sku;
      const li = document.createElement("li");
      li.className = "item";
      li.dataset.sku = entry.sku;
      li.dataset.priceCents = String(entry.unit_price_cents);
      const label = document.createElement("label");
      label.htmlFor = id;
      label.textContent = entry.name;
      const price = document.createElement("span");
      price.className = "price";
      price.id = "price-" + entry.sku;
      price.textContent = money.format(entry.unit_price_cents / 100);
      const before = shown.get(entry.sku);
      if (before !== undefined && before !== li.dataset.priceCents) price.classList.add("changed");
      const qty = document.createElement("input");
      Object.assign(qty, { id, className: "qty", type: "number", min: "0", max: "99", step: "1" });
      qty.inputMode = "numeric";
      qty.value = typed.get(entry.sku) || "0";
      qty.setAttribute("aria-describedby", price.id + " " + id + "-error");
      const error = document.createElement("p");
      error.className = "error";
      error.id = id + "-error";
      error.hidden = true;
      li.append(label, price, qty, error);
      return li;
    });
    list.replaceChildren(...items);
    list.removeAttribute("aria-busy");
    $("catalogue-status").hidden = true;
    updateTotal();
  }

  async function loadCatalogue() {
    try {
      const response = await fetch("/catalogue", { headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error("HTTP " + response.status);
      showCatalogue(await response.json());
      return true;
    } catch (_) {
      $("catalogue-status").textContent = "The catalogue could not be loaded. Reload the page to try again.";
      placeButton.hidden = true;
      return false;
    }
  }

  function quantityOf(item) {
    const value = item.querySelector(".qty").value.trim();
    return value === "" ? 0 : Number(value);
  }

  function updateTotal() {
    const cents = items.reduce((sum, item) => {
      const quantity = quantityOf(item);
      return Number.isInteger(quantity) && quantity > 0 ? sum + quantity * Number(item.dataset.priceCents) : sum;
    }, 0);
    if (money) $("total").textContent = money.format(cents / 100);
  }

  // Every line with a non-zero quantity is sent as typed: the producer checks it
  // and its answer names the line at fault.
  function buildOrder() {
    const chosen = items.filter((item) => quantityOf(item) !== 0);
    sentInputs = chosen.map((item) => item.querySelector(".qty"));
    const order = {
      order_id: state.orderId,
      currency,
      items: chosen.map((item) => ({
        sku: item.dataset.sku,
        quantity: quantityOf(item),
        unit_price_cents: Number(item.dataset.priceCents),
      })),
    };
    if (!signedIn) order.customer_id = customer.value.trim();
    return order;
  }

  function restoreForm(body) {
    customer.value = body.customer_id || "";
    const lines = Array.isArray(body.items) ? body.items : [];
    for (const item of items) {
      const line = lines.find((l) => l.sku === item.dataset.sku);
      item.querySelector(".qty").value = line ? String(line.quantity) : "0";
    }
    sentInputs = lines.map((l) => $("qty-" + l.sku)).filter(Boolean);
    updateTotal();
  }

  // While an order's fate is unknown its fields are read-only, so that a retry
  // sends exactly what may already have been queued.
  function lockForm(locked, hideButton = locked) {
    customer.readOnly = locked;
    for (const item of items) item.querySelector(".qty").readOnly = locked;
    placeButton.hidden = hideButton;
  }

  function setPending(button, pending, label) {
    button.setAttribute("aria-disabled", String(pending));
    if (label) button.textContent = label;
  }

  function clearErrors() {
    for (const el of document.querySelectorAll(".error")) {
      el.hidden = true;
      el.textContent = "";
    }
    for (const el of document.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
  }

  async function send(body) {
    sending = true;
    // Locked while in flight too: the answer is about this body, not later edits.
    lockForm(true, !$("busy").hidden);
    state.sent = body;
    state.notice = null;
    state.retryAt = 0;
    save();
    clearErrors();
    setPending(placeButton, true, "Placing order…");
    setPending(retryButton, true);
    let response;
    try {
      const options = {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json, application/problem+json" },
        body: JSON.stringify(body),
        cache: "no-store",
      };
      if (AbortSignal.timeout) options.signal = AbortSignal.timeout(REQUEST_TIMEOUT_MS);
      response = await fetch("/orders", options);
    } catch (_) {
      finish();
      showBusy(UNREACHABLE, 0);
      return;
    }
    finish();
    if (response.status === 202) {
      const answer = await response.json().catch(() => ({}));
      showReceived(typeof answer.order_id === "string" ? answer.order_id : body.order_id);
    } else if (response.status === 409) {
      const problem = await response.json().catch(() => null);
      if (problem && problem.catalogue) {
        showRepriced(problem.catalogue);
      } else {
        forget();
        state = { orderId: null, sent: null };
        showProblem(problem, response.status);
      }
    } else if (response.status === 401) {
      // Not forwarded, or not believed: nothing queued by this request, but an
      // earlier one of this order may have been, so the order stays as it is.
      // The load balancer's own 401 has no body; either way, sign in again.
      showBusy("Your sign-in has expired. Sign in again (reload this page), then try again: the order will not be placed twice", 0);
    } else if (refusedAsSent(response.status) && state.unknown) {
      // An earlier request of this order may have queued it: no 4xx makes
      // that undone, so the order keeps its id and body until a 202.
      const problem = await response.json().catch(() => null);
      showBusy((problem && typeof problem.detail === "string" ? problem.detail + " " : "") + NO_ANSWER, 0);
    } else if (refusedAsSent(response.status)) {
      // Nothing was queued and this cart's fate is known: the corrected cart
      // is a new one, sent under an id of its own.
      forget();
      state = { orderId: null, sent: null };
      const problem = await response.json().catch(() => null);
      showProblem(problem, response.status);
    } else {
      // 5xx, 408 or 429: this request queued nothing, but an earlier one of
      // this order may have, so it is sent again exactly as it was.
      showBusy(BUSY, retryAfterSecs(response.headers.get("Retry-After")));
    }
  }

  // A 4xx says what to change, except 408 (too slow) and 429 (too many),
  // which only say to send the same request again.
  function refusedAsSent(status) {
    return status >= 400 && status < 500 && status !== 408 && status !== 429;
  }

  function finish() {
    sending = false;
    confirming = false;
    $("repriced").hidden = true;
    setPending(placeButton, false, "Place order");
  }

  // Retry-After is either seconds or an HTTP date.
  function retryAfterSecs(header) {
    if (header === null) return DEFAULT_RETRY_SECS;
    let secs = /^\d+$/.test(header.trim()) ? Number(header) : (Date.parse(header) - Date.now()) / 1000;
    if (!Number.isFinite(secs)) secs = DEFAULT_RETRY_SECS;
    return Math.min(Math.max(Math.ceil(secs), 0), MAX_RETRY_SECS);
  }

  function showBusy(message, waitSecs) {
    lockForm(true);
    state.unknown = true;
    $("received").hidden = true;
    $("busy").hidden = false;
    $("busy-message").textContent = message;
    clearTimeout(retryTimer);
    state.notice = message;
    state.retryAt = Date.now() + waitSecs * 1000;
    save();
    const wait = $("retry-wait");
    if (waitSecs > 0) {
      setPending(retryButton, true);
      wait.textContent = "You can try again in " + waitSecs + (waitSecs === 1 ? " second." : " seconds.");
      retryTimer = setTimeout(() => {
        setPending(retryButton, false);
        wait.textContent = "You can try again now.";
      }, waitSecs * 1000);
    } else {
      setPending(retryButton, false);
      wait.textContent = "";
    }
    retryButton.focus();
  }

  // Nothing was queued: the cart stays, at the new prices, for the customer to
  // confirm (or change) before it is sent again under the same order_id.
  function showRepriced(catalogue) {
    const orderId = state.orderId;
    forget();
    state = { orderId, sent: null };
    confirming = true;
    lockForm(false);
    $("busy").hidden = true;
    showCatalogue(catalogue);
    placeButton.textContent = "Confirm order at the new prices";
    $("repriced").hidden = false;
    $("repriced").focus();
  }

  function showReceived(orderId) {
    forget();
    state = { orderId: null, sent: null };
    $("busy").hidden = true;
    form.hidden = true;
    $("received-id").textContent = orderId;
    $("received").hidden = false;
    $("received-title").focus();
    follow(orderId);
  }

  // Only a signed-in customer's orders can be read: in trial mode the page
  // says "received" and no more.
  function follow(orderId) {
    $("order-status").hidden = !signedIn;
    if (!signedIn) return;
    following = { orderId, receivedAt: Date.now(), waitMs: FOLLOW_FIRST_MS, state: null };
    showState(following, "on-its-way");
    look(following, FOLLOW_FIRST_MS);
  }

  function look(followed, ms) {
    setTimeout(async () => {
      if (followed !== following) return;
      let response = null;
      try {
        response = await fetch("/orders/" + encodeURIComponent(followed.orderId), {
          headers: { Accept: "application/json, application/problem+json" },
          cache: "no-store",
        });
      } catch (_) { /* no answer: look again later, the state as it was */ }
      if (followed !== following) return;
      const status = response ? response.status : 0;
      const order = status === 200 ? await response.json().catch(() => null) : null;
      if (order && (order.status === "stored" || order.status === "kept_aside")) {
        showState(followed, order.status === "stored" ? "stored" : "kept-aside", order.stored_at);
        loadOrders();
        return;
      }
      if (status === 401) {
        showState(followed, "signed-out");
        return;
      }
      let wait = followed.waitMs;
      let state = followed.state;
      // 503: the status function cannot reach the database. 502 and 504: the
      // load balancer's own answers when the function fails or times out.
      if (status === 503 || status === 502 || status === 504) {
        state = "catching-up";
        wait = 1000 * Math.max(1, Math.min(retryAfterSecs(response.headers.get("Retry-After")), FOLLOW_MAX_MS / 1000));
      } else if (status !== 0) {
        state = "on-its-way";
        followed.waitMs = Math.min(2 * followed.waitMs, FOLLOW_MAX_MS);
      }
      if (Date.now() - followed.receivedAt >= DELAYED_AFTER_MS) state = "delayed";
      showState(followed, state);
      look(followed, wait);
    }, ms);
  }

  // Changes the live region only when the state changes, so that each change
  // is announced once.
  function showState(followed, state, storedAt) {
    if (followed.state === state) return;
    followed.state = state;
    const [title, detail] = STATES[state];
    const heading = $("state-title");
    heading.textContent = title;
    if (storedAt) heading.append(" on ", timeElement(storedAt));
    $("state-detail").textContent = detail;
    $("received").dataset.state = state;
  }

  function timeElement(iso) {
    const time = document.createElement("time");
    time.dateTime = iso;
    time.textContent = when.format(new Date(iso));
    return time;
  }

  // The signed-in customer's newest orders, as the shop has them. Shown again
  // whenever a followed order is stored or kept aside.
  async function loadOrders() {
    const note = $("orders-status");
    $("orders").hidden = false;
    let answer = null;
    try {
      const response = await fetch("/orders", { headers: { Accept: "application/json" }, cache: "no-store" });
      if (response.ok) answer = await response.json();
    } catch (_) { /* said below */ }
    if (!answer || !Array.isArray(answer.orders)) {
      note.textContent = "Your orders cannot be listed just now. Orders you placed are safe: reload the page later to see them.";
      note.hidden = false;
      return;
    }
    note.textContent = answer.orders.length ? "" : "You have no orders yet.";
    note.hidden = answer.orders.length > 0;
    $("order-list").replaceChildren(...answer.orders.map(listed));
  }

  function listed(order) {
    const li = document.createElement("li");
    const stored = order.status === "stored";
    li.dataset.state = stored ? "stored" : "kept-aside";
    const state = document.createElement("span");
    state.className = "listed-state";
    state.textContent = stored ? "Stored ✓" : "Kept aside: not placed";
    const lines = Array.isArray(order.items) ? order.items : [];
    const count = lines.reduce((sum, line) => sum + Number(line.quantity || 0), 0);
    const cents = typeof order.total_cents === "number"
      ? order.total_cents
      : lines.reduce((sum, line) => sum + Number(line.quantity || 0) * Number(line.unit_price_cents || 0), 0);
    let total = "";
    try {
      total = new Intl.NumberFormat("en-IE", { style: "currency", currency: order.currency }).format(cents / 100);
    } catch (_) { /* an unknown currency: the count alone */ }
    const what = document.createElement("span");
    what.textContent = (count === 1 ? "1 item" : count + " items") + (total ? " · " + total : "");
    const id = document.createElement("span");
    id.className = "order-id";
    id.textContent = order.order_id;
    li.append(state, " ", timeElement(order.received_at), " ", what, " ", id);
    return li;
  }

  // The problem's detail goes next to the field it names; problems about no
  // field (or one the page has no control for) go above the button.
  function showProblem(problem, status) {
    state.unknown = false;
    lockForm(false);
    $("busy").hidden = true;
    const detail = problem && typeof problem.detail === "string"
      ? problem.detail
      : "The order was not accepted (HTTP " + status + ").";
    const field = problem && typeof problem.field === "string" ? problem.field : "";
    let input = null;
    let error = $("form-error");
    const line = /^items\[(\d+)\]/.exec(field);
    if (field === "customer_id") {
      input = customer;
      error = $("customer-id-error");
    } else if (field === "items") {
      error = $("items-error");
    } else if (line && sentInputs[Number(line[1])]) {
      input = sentInputs[Number(line[1])];
      error = $(input.id + "-error");
    }
    error.textContent = detail;
    error.hidden = false;
    if (input) input.setAttribute("aria-invalid", "true");
    (input || (field === "items" ? items[0].querySelector(".qty") : error)).focus();
  }

  function startNewOrder() {
    state = { orderId: null, sent: null };
    for (const item of items) item.querySelector(".qty").value = "0";
    updateTotal();
    clearErrors();
    lockForm(false);
    $("received").hidden = true;
    form.hidden = false;
    (signedIn && items.length ? items[0].querySelector(".qty") : customer).focus();
  }

  // Who is signed in: the name and sign-out, or the trial mode's notice and
  // the customer number it needs.
  async function whoIsSignedIn() {
    let me = null;
    try {
      const response = await fetch("/me", { cache: "no-store" });
      if (response.ok) me = await response.json();
    } catch (_) { /* unreachable: the order's own request will say so */ }
    signedIn = Boolean(me && me.sign_in === "on" && typeof me.customer_id === "string");
    if (signedIn) {
      $("who-name").textContent = me.customer_id;
      $("who").hidden = false;
      $("customer-field").hidden = true;
      customer.required = false;
      loadOrders();
    } else {
      $("trial").hidden = !(me && me.sign_in === "off");
    }
  }

  form.addEventListener("input", (event) => {
    updateTotal();
    // An edited field no longer carries the old answer's complaint.
    const field = event.target;
    if (field.classList.contains("qty")) $("items-error").hidden = true;
    if (field.getAttribute("aria-invalid") === "true") {
      field.removeAttribute("aria-invalid");
      const error = $(field.id + "-error");
      if (error) error.hidden = true;
    }
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (sending || state.sent || !currency) return;
    // A cart not sent before: made into an order now, under a fresh id (or the
    // id of the order whose new prices are being confirmed, see `confirming`).
    if (!confirming || !state.orderId) state.orderId = newOrderId();
    send(buildOrder());
  });
  retryButton.addEventListener("click", () => {
    if (sending || !state.sent || retryButton.getAttribute("aria-disabled") === "true") return;
    send(state.sent);
  });
  $("new-order").addEventListener("click", startNewOrder);

  whoIsSignedIn();
  loadCatalogue().then((loaded) => {
    if (loaded && state.sent) {
      // Reloaded before an answer arrived: the same order, ready to be sent again.
      restoreForm(state.sent);
      const waitSecs = Math.max(0, Math.ceil(((state.retryAt || 0) - Date.now()) / 1000));
      showBusy(state.notice || NO_ANSWER, Math.min(waitSecs, MAX_RETRY_SECS));
    }
  });
})();
