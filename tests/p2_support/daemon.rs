//! What the door tests through the real binary share: one request and its reply over the
//! component link, and the settings of the registration store.

use std::path::Path;
use std::time::Duration;

use fpush_testkit::xmpp::{ComponentLink, Stanza};
use serde_json::json;

/// How long a reply may take.
const REPLY_WAIT: Duration = Duration::from_secs(10);

/// Sends `iq` (whose id is `id`) over `link` and answers its reply.
pub async fn exchange(link: &mut ComponentLink, id: &str, iq: &str) -> Stanza {
    link.send(iq).await.expect("send");
    let reply = link.next_stanza(REPLY_WAIT).await.expect("a reply");
    assert_eq!(reply.attr("id"), Some(id), "{}", reply.raw);
    reply
}

/// The settings' `store` entry (with its trailing comma) for a SQLite store in `dir`, and no
/// `modules.retiredGrace`: the store made for the test answers `cancel` at once for the
/// registrations it lacks, as an established one does (a new store's grace has its own tests).
pub fn store_entry(dir: &Path) -> String {
    let store = json!({"path": dir.join("registrations.sqlite3")});
    format!(r#""store": {store}, "modules": {{"retiredGrace": "0s"}},"#)
}
