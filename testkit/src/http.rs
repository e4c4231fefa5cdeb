//! Reading a service's HTTP answers in tests: a status with its JSON body, and the problem body
//! of a 400 that names a field.

/// `GET url`: the status and the JSON body (`null` when it is not JSON).
pub async fn get_json(client: &reqwest::Client, url: &str) -> (u16, serde_json::Value) {
    answer(client.get(url)).await
}

/// Sends `request`: the status and the JSON body (`null` when it is not JSON).
pub async fn answer(request: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    let response = request.send().await.expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// Asserts that an answer (`status`, JSON body) is a 400 naming `field`, saying `context` if
/// not.
pub fn assert_names_field(status: u16, body: &serde_json::Value, field: &str, context: &str) {
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some(field)),
        "{context}: {body}"
    );
}
