//! What APNS and FCM answer is untrusted input too (proxies, outages, API changes). The input is
//! `STATUS RETRY-AFTER\nBODY`: the APNS answer judge, FCM's `messages:send` classifier and its
//! token-endpoint reader must take any status, header and body without panicking, and a 2xx
//! from APNS is always a delivery.

#![no_main]

use fpush_apns::response::judge;
use fpush_http::{HttpResponse, ProviderAnswer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (head, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let mut fields = head.splitn(2, |b| *b == b' ');
    let status = fields
        .next()
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or(500);
    let retry_after = fields.next().unwrap_or_default();

    if let Ok(code) = http::StatusCode::from_u16(status) {
        let mut headers = http::HeaderMap::new();
        if let Ok(value) = http::HeaderValue::from_bytes(retry_after) {
            headers.insert(http::header::RETRY_AFTER, value);
        }
        let answer = HttpResponse {
            status: code,
            headers,
            body: bytes::Bytes::copy_from_slice(body),
        };
        let verdict = judge(&answer);
        if code == http::StatusCode::OK {
            assert!(
                matches!(verdict, ProviderAnswer::Delivered(_)),
                "{verdict:?}"
            );
        }
    }
    let _ = fpush_fcm::fuzzing::judge_send_answer(status, retry_after, body);
    let _ = fpush_fcm::fuzzing::judge_token_answer(status, body);
});
