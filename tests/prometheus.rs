//! The dashboard and the alerts against a real Prometheus: it scrapes a running fpush that has
//! served pushes (1 s interval) through a demo, an APNS (certificate auth) and an FCM module,
//! the last two against the test kit's providers, push2 messages through the Web Push module
//! (one to the test kit's Web Push service, one fenced) and a Conversations-style registration
//! with a push by its node, and loads `contrib/prometheus/fpush-alerts.yml`;
//! then every dashboard expression (Grafana variables substituted) and every alert expression
//! without its comparison must parse and return at least one series.
//!
//! Needs Debian's `prometheus` package; run by `scripts/prometheus-test.sh` (ignored otherwise).

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use fpush_testkit::apns::ApnsHarness;
use fpush_testkit::fcm::FcmServer;
use fpush_testkit::settings::with_keys;
use fpush_testkit::tls::{P12Cipher, TestPki};
use fpush_testkit::webpush::{Versions, WebPushTestServer};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A Prometheus server in a temp dir; killed when dropped.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(target_port: u16, rules: &Path) -> Prometheus {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        let yaml = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules:?}\n\
             scrape_configs:\n  - job_name: fpush\n    static_configs:\n      \
             - targets: ['127.0.0.1:{target_port}']\n"
        );
        std::fs::write(&config, yaml).expect("write prometheus.yml");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus (apt-get install prometheus)");
        Prometheus {
            child,
            port,
            _dir: dir,
        }
    }

    /// GET `path_and_query`: (status, body).
    async fn get(&self, path_and_query: &str) -> Option<(u16, String)> {
        http_get_10(self.port, path_and_query).await
    }

    /// The JSON `data` of an API call; panics on an error answer.
    async fn api(&self, path_and_query: &str) -> Value {
        let (status, body) = self.get(path_and_query).await.expect("prometheus answers");
        let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        assert!(
            status == 200 && json["status"] == "success",
            "{path_and_query}: {status} {body}"
        );
        json["data"].clone()
    }

    async fn query(&self, expr: &str) -> Vec<Value> {
        let data = self
            .api(&format!("/api/v1/query?query={}", percent_encode(expr)))
            .await;
        data["result"].as_array().cloned().unwrap_or_default()
    }
}

/// An HTTP/1.0 GET (no chunked answers to decode): (status, body), `None` if not connected.
async fn http_get_10(port: u16, path: &str) -> Option<(u16, String)> {
    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    socket.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    socket.read_to_string(&mut response).await.ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Poll `check` every 200 ms until it holds, for up to `limit`.
async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every `expr` in the dashboard, with its Grafana variables substituted.
fn dashboard_expressions(root: &Path) -> Vec<String> {
    fn walk(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(expr)) = map.get("expr") {
                    out.push(expr.clone());
                }
                map.values().for_each(|v| walk(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let path = root.join("contrib/grafana/fpush-dashboard.json");
    let text = std::fs::read_to_string(&path).expect("the dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    walk(&dashboard["panels"], &mut exprs);
    exprs
        .into_iter()
        .map(|e| {
            e.replace("$__rate_interval", "1m")
                .replace("$instance", ".*")
                .replace("$module", ".*")
        })
        .collect()
}

/// An alert's query without its final comparison (`… > 0.05`, `… < 14 * 86400`).
fn without_comparison(query: &str) -> String {
    let query = query.trim();
    for op in [" == ", " != ", " >= ", " <= ", " > ", " < "] {
        if let Some((left, right)) = query.rsplit_once(op) {
            let threshold = right
                .chars()
                .all(|c| c.is_ascii_digit() || " .*".contains(c));
            if threshold {
                return left.trim().to_owned();
            }
        }
    }
    query.to_owned()
}

/// Serve a few pushes (delivered, queued, ratelimited, unknown module, malformed, through each
/// platform) through fpush.
async fn serve_some_pushes(link: &mut ComponentLink) {
    let apns_token = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
    for (id, token, module) in [
        ("p1", "token-a", None),
        ("p2", "token-a", None),
        ("p3", "token-a", None),
        ("p4", "token-b", Some("demo")),
        ("p5", "token-c", Some("nosuchapp")),
        ("p6", "bad token", None),
        ("p7", apns_token, Some("ios")),
        ("p8", "fcm-token:APA91b-example", Some("android")),
    ] {
        link.send(&push_iq(id, token, module)).await.unwrap();
    }
    link.collect(7, WAIT).await.unwrap();
}

/// Two push2 messages: one delivered to the Web Push service (and so not answered), one to an
/// endpoint outside the origin fence (answered, nothing sent).
async fn serve_push2_messages(link: &mut ComponentLink, service: &WebPushTestServer) {
    for (id, client) in [
        ("w1", format!("{}/sub", service.origin())),
        ("w2", "https://127.0.0.1/fenced".to_owned()),
    ] {
        let message = format!(
            "<message from='localhost' to='{JID}' id='{id}'>\
             <notification xmlns='urn:xmpp:push2:0'><client>{client}</client></notification>\
             </message>"
        );
        link.send(&message).await.unwrap();
    }
    link.collect(1, WAIT).await.unwrap();
    eventually(
        "the push2 message never reached the service",
        WAIT,
        || async { !service.received().is_empty() },
    )
    .await;
}

/// The reply to the IQ `id`, passing over the replies to earlier pushes (a queued one).
async fn reply_to(link: &mut ComponentLink, id: &str) -> Stanza {
    loop {
        let stanza = link.next_stanza(WAIT).await.unwrap();
        if stanza.attr("id") == Some(id) {
            return stanza;
        }
    }
}

/// A Conversations-style registration (`register-push-fcm` from a client's full JID) and one
/// push by its node and secret, delivered through the FCM module.
async fn serve_a_registration(link: &mut ComponentLink) {
    let command = format!(
        "<iq type='set' id='r1' from='juliet@localhost/phone' to='{JID}'>\
         <command xmlns='http://jabber.org/protocol/commands' node='register-push-fcm' action='execute'>\
         <x xmlns='jabber:x:data' type='submit'>\
         <field var='token'><value>fcm-token:APA91b-registered</value></field>\
         <field var='device-id'><value>phone-1</value></field></x></command></iq>"
    );
    link.send(&command).await.unwrap();
    let reply = reply_to(link, "r1").await;
    assert_eq!(reply.kind(), Some("result"), "{}", reply.raw);
    let value = |var: &str| {
        let open = format!("<field var='{var}'><value>");
        let start = reply.raw.find(&open).expect("the field") + open.len();
        let end = start + reply.raw[start..].find("</value>").expect("its end");
        reply.raw[start..end].to_owned()
    };
    let (node, secret) = (value("node"), value("secret"));
    let push = format!(
        "<iq type='set' id='r2' from='localhost' to='{JID}'>\
         <pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{node}'><item>\
         <notification xmlns='urn:xmpp:push:0'/></item></publish><publish-options>\
         <x xmlns='jabber:x:data' type='submit'>\
         <field var='secret'><value>{secret}</value></field></x></publish-options></pubsub></iq>"
    );
    link.send(&push).await.unwrap();
    let reply = reply_to(link, "r2").await;
    assert_eq!(reply.kind(), Some("result"), "{}", reply.raw);
    // A node the store (made moments ago) lacks: answered wait, and counted.
    let lacking = push.replace(&node, "unknownNode1").replace("'r2'", "'r3'");
    link.send(&lacking).await.unwrap();
    let reply = reply_to(link, "r3").await;
    assert_eq!(reply.kind(), Some("error"), "{}", reply.raw);
    assert!(reply.raw.contains("type='wait'"), "{}", reply.raw);
}

/// The demo module (the default), an APNS module with a `.p12` and an FCM module serving
/// Conversations-style registrations, the last two aimed at the test kit's servers.
fn modules(apns: &ApnsHarness, fcm: &FcmServer) -> String {
    let demo: Value = serde_json::from_str(&demo_module(Some("30s"), "5ms")).expect("demo JSON");
    let cert = apns.cert_settings(P12Cipher::Modern).expect("a .p12");
    let mut modules = demo;
    modules["ios"] =
        json!({ "type": "apple", "apns": with_keys(cert, json!({"requestTimeout": "5s"})) });
    modules["android"] = json!({
        "type": "google",
        "registration": { "protocol": "p2" },
        "fcm": with_keys(fcm.settings(), json!({"requestTimeout": "5s"})),
    });
    modules.to_string()
}

#[tokio::test]
#[ignore = "needs Prometheus: run scripts/prometheus-test.sh"]
async fn every_dashboard_and_alert_expression_returns_series_on_a_real_prometheus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let apns = ApnsHarness::start().await.unwrap();
    let fcm = FcmServer::start().await.unwrap();
    let pki = TestPki::new().unwrap();
    let web_push = WebPushTestServer::start(&pki, Versions::Both)
        .await
        .unwrap();
    let ca_dir = tempfile::tempdir().unwrap();
    let ca = ca_dir.path().join("ca.pem");
    pki.write_ca_pem(&ca).unwrap();
    let push2 = json!({ "webPushOrigins": [web_push.origin()], "caFilePath": ca });
    let store = json!({ "path": ca_dir.path().join("registrations.sqlite3") });
    let metrics_port = free_port();
    let _fpush = Daemon::start(&settings(
        &server,
        &modules(&apns, &fcm),
        &format!(
            r#""metrics": {{ "listen": "127.0.0.1:{metrics_port}" }}, "push2": {push2}, "store": {store},"#
        ),
    ));
    let mut link = server.accept(WAIT).await.unwrap();
    serve_some_pushes(&mut link).await;
    serve_push2_messages(&mut link, &web_push).await;
    serve_a_registration(&mut link).await;

    let rules = root.join("contrib/prometheus/fpush-alerts.yml");
    let prometheus = Prometheus::start(metrics_port, &rules);
    eventually("prometheus never became ready", WAIT * 3, || async {
        matches!(prometheus.get("/-/ready").await, Some((200, _)))
    })
    .await;
    eventually("two scrapes of fpush never arrived", WAIT * 3, || async {
        let scrapes = prometheus
            .query(r#"count_over_time(up{job="fpush"}[1m]) >= 2 and up{job="fpush"} == 1"#)
            .await;
        !scrapes.is_empty()
    })
    .await;
    let groups = prometheus.api("/api/v1/rules?type=alert").await;
    let mut exprs: Vec<String> = groups["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
        .map(|rule| {
            assert_eq!(rule["health"], "ok", "{rule}");
            without_comparison(rule["query"].as_str().unwrap_or_default())
        })
        .collect();
    assert_eq!(exprs.len(), 10, "every alert rule loaded: {groups}");
    exprs.extend(dashboard_expressions(root));

    let mut empty = Vec::new();
    for expr in &exprs {
        if prometheus.query(expr).await.is_empty() {
            empty.push(expr);
        }
    }
    assert!(empty.is_empty(), "no series for: {empty:#?}");
    // The exposition the expressions were checked against, for the series table in the docs.
    if let Ok(path) = std::env::var("FPUSH_METRICS_DUMP") {
        let (_, text) = http_get_10(metrics_port, "/metrics")
            .await
            .expect("a scrape");
        std::fs::write(path, text).expect("write the scrape");
    }
    eprintln!("all {} expressions returned series", exprs.len());
}

#[test]
fn comparisons_are_cut_from_alert_queries_and_nothing_else() {
    assert_eq!(without_comparison("a == 0"), "a");
    assert_eq!(without_comparison("x - time() < 14 * 86400"), "x - time()");
    assert_eq!(
        without_comparison("sum(rate(a[5m])) / sum(b) > 0.05"),
        "sum(rate(a[5m])) / sum(b)"
    );
    assert_eq!(without_comparison(r#"a{b=~"c|d"}"#), r#"a{b=~"c|d"}"#);
}
