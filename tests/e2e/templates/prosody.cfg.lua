-- Prosody 0.12 for fpush's end-to-end tests and demo: one virtual host, one push component,
-- loopback only, no TLS, no s2s. Placeholders are filled in at run time.
run_as_root = true -- harmless when not root; needed when the tests run as root (CI)
pidfile = "${DIR}/prosody.pid"
data_path = "${DIR}/data"
log = {
    { levels = { min = "${LOG_LEVEL}" }, to = "file", filename = "${DIR}/prosody.log" };
}

interfaces = { "127.0.0.1" }
c2s_ports = { ${C2S_PORT} }
component_interfaces = { "127.0.0.1" }
component_ports = { ${COMPONENT_PORT} }
http_ports = { }
https_ports = { }

c2s_require_encryption = false
allow_unencrypted_plain_auth = false -- SCRAM works without TLS
authentication = "internal_hashed"
storage = "internal"

modules_enabled = {
    "roster"; "saslauth"; "disco"; "ping";
    "offline";      -- stores messages for offline users (and triggers their push)
    "smacks";       -- XEP-0198: a dropped client is kept hibernating and pushed to
    "cloud_notify"; -- XEP-0357 (from prosody-modules)
}
modules_disabled = { "s2s"; "tls" }

-- A cancel from the app server disables a registration after this many errors in a row
-- (the default 16 would make the dead-token test slow).
push_max_errors = ${PUSH_MAX_ERRORS}
-- Seconds a dropped stream-management session stays resumable.
smacks_hibernation_time = 60

VirtualHost "localhost"

Component "${COMPONENT_JID}"
    component_secret = "${COMPONENT_SECRET}"
