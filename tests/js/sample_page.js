// Runs blueprints/ui_static/app.js under Node with a minimal stand-in for the DOM, for
// tests/test_sample_page.py: node sample_page.js <app.js> <page URL>. Prints the #outcome box as JSON
// after the page's DOMContentLoaded work settles. No dependency: Node's own URL and vm modules.
"use strict";
const fs = require("fs");
const vm = require("vm");

const [, , scriptPath, pageUrl] = process.argv;
const byId = {};

class Element {
  constructor(tag) {
    Object.assign(this, { tag, attrs: {}, children: [], text: "", hidden: false, className: "", disabled: false, value: "" });
  }
  set textContent(value) {
    this.children = [];
    this.text = String(value);
  }
  get textContent() {
    return this.text + this.children.map((c) => (typeof c === "string" ? c : c.textContent)).join("");
  }
  setAttribute(name, value) {
    this.attrs[name] = String(value);
    if (name === "id") byId[String(value)] = this;
  }
  getAttribute(name) {
    return name in this.attrs ? this.attrs[name] : null;
  }
  append(...nodes) {
    this.children.push(...nodes);
  }
  replaceChildren(...nodes) {
    this.text = "";
    this.children = nodes;
  }
  addEventListener() {}
  toJSON() {
    return { tag: this.tag, attrs: this.attrs, className: this.className, text: this.text, children: this.children };
  }
}

const listeners = {};
const storage = new Map();
const location = new URL(pageUrl);
location.assign = () => {};
const sandbox = {
  URL,
  URLSearchParams,
  console,
  document: {
    getElementById: (id) => byId[id] || (byId[id] = new Element("div")),
    createElement: (tag) => new Element(tag),
    addEventListener: (name, fn) => (listeners[name] = fn),
  },
  window: {
    location,
    history: { replaceState() {} },
    sessionStorage: {
      getItem: (k) => (storage.has(k) ? storage.get(k) : null),
      setItem: (k, v) => storage.set(k, String(v)),
      removeItem: (k) => storage.delete(k),
    },
    setInterval: () => 0,
    clearInterval: () => {},
  },
  // The API: the config route answers, everything else is a 404 (this run checks what the URL shows).
  fetch: async (path) => ({
    ok: path === "ui/config",
    status: path === "ui/config" ? 200 : 404,
    json: async () => (path === "ui/config" ? { mailbox_viewer: null } : { error: { code: "not_found" } }),
  }),
};
vm.createContext(sandbox);
vm.runInContext(fs.readFileSync(scriptPath, "utf8"), sandbox, { filename: scriptPath });
listeners.DOMContentLoaded();
setTimeout(() => process.stdout.write(JSON.stringify(byId.outcome || null)), 50);
