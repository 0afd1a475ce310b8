//! Live control messages a client sends on a market-stream connection, and the replies, with
//! Binance's wording and error codes (`{"code":2,"msg":"Invalid request: …"}`,
//! `{"code":3,"msg":"Invalid JSON: …"}`). Pure parsing: the connection applies the request.

use serde::Deserialize;
use serde_json::Value;

use crate::market::stream::is_well_formed;

/// A valid request and its id.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Request {
    Subscribe(Vec<String>, u64),
    Unsubscribe(Vec<String>, u64),
    List(u64),
}

#[derive(Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum Method {
    Subscribe,
    Unsubscribe,
    ListSubscriptions,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    method: Method,
    #[serde(default)]
    params: Vec<Value>,
    id: u64,
}

/// Parses one text frame from the client; `Err` holds the error reply to send.
pub(crate) fn parse(text: &str) -> Result<Request, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        format!(
            r#"{{"code":3,"msg":{}}}"#,
            json_str(&format!("Invalid JSON: {e}"))
        )
    })?;
    // Echo the id in errors when there is a usable one, as Binance does.
    let id = value.get("id").and_then(Value::as_u64);
    let invalid = |why: String| invalid_request(&why, id);
    let wire: Wire = serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?;
    let streams = || -> Result<Vec<String>, String> {
        if wire.params.is_empty() {
            return Err(invalid("missing parameters".into()));
        }
        wire.params
            .iter()
            .map(|p| match p.as_str() {
                Some(name) if is_well_formed(name) => Ok(name.to_owned()),
                Some(name) => Err(invalid(format!("invalid stream name `{name}`"))),
                None => Err(invalid(format!(
                    "invalid value for 'params': expected stream names, found {p}"
                ))),
            })
            .collect()
    };
    Ok(match wire.method {
        Method::Subscribe => Request::Subscribe(streams()?, wire.id),
        Method::Unsubscribe => Request::Unsubscribe(streams()?, wire.id),
        Method::ListSubscriptions if !wire.params.is_empty() => {
            return Err(invalid("too many parameters".into()));
        }
        Method::ListSubscriptions => Request::List(wire.id),
    })
}

/// A code 2 error: `{"code":2,"msg":"Invalid request: <why>","id":…}`.
fn invalid_request(why: &str, id: Option<u64>) -> String {
    let id = id.map_or_else(|| "null".to_owned(), |id| id.to_string());
    format!(
        r#"{{"code":2,"msg":{},"id":{id}}}"#,
        json_str(&format!("Invalid request: {why}"))
    )
}

/// The reply to a valid request the connection refuses (a limit), as an invalid one.
pub(crate) fn refusal(why: &str, id: u64) -> String {
    invalid_request(why, Some(id))
}

/// The reply to a successful SUBSCRIBE or UNSUBSCRIBE.
pub(crate) fn ack(id: u64) -> String {
    format!(r#"{{"result":null,"id":{id}}}"#)
}

/// The reply to LIST_SUBSCRIPTIONS.
pub(crate) fn list(streams: &[String], id: u64) -> String {
    let names: Vec<String> = streams.iter().map(|s| json_str(s)).collect();
    format!(r#"{{"result":[{}],"id":{id}}}"#, names.join(","))
}

/// `s` as a JSON string literal.
fn json_str(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_requests() {
        let sub = r#"{"method":"SUBSCRIBE","params":["ethusdt@depth","btcusdt@aggTrade"],"id":1}"#;
        assert_eq!(
            parse(sub),
            Ok(Request::Subscribe(
                vec!["ethusdt@depth".into(), "btcusdt@aggTrade".into()],
                1
            ))
        );
        let unsub = r#"{"method":"UNSUBSCRIBE","params":["ethusdt@depth"],"id":312}"#;
        assert_eq!(
            parse(unsub),
            Ok(Request::Unsubscribe(vec!["ethusdt@depth".into()], 312))
        );
        assert_eq!(
            parse(r#"{"method":"LIST_SUBSCRIPTIONS","id":3}"#),
            Ok(Request::List(3))
        );
        assert_eq!(
            parse(r#"{"method":"LIST_SUBSCRIPTIONS","params":[],"id":4}"#),
            Ok(Request::List(4))
        );
    }

    #[test]
    fn replies_match_binance() {
        assert_eq!(ack(1), r#"{"result":null,"id":1}"#);
        assert_eq!(
            list(&["a@depth".into(), "b@depth5".into()], 3),
            r#"{"result":["a@depth","b@depth5"],"id":3}"#
        );
        assert_eq!(list(&[], 4), r#"{"result":[],"id":4}"#);
        assert_eq!(
            refusal("too many streams", 5),
            r#"{"code":2,"msg":"Invalid request: too many streams","id":5}"#
        );
    }

    fn error(text: &str) -> Value {
        serde_json::from_str(&parse(text).unwrap_err()).unwrap()
    }

    #[test]
    fn invalid_json_is_code_3() {
        let e = error("{not json");
        assert_eq!(e["code"], 3);
        assert!(
            e["msg"].as_str().unwrap().starts_with("Invalid JSON: "),
            "{e}"
        );
        assert!(e.get("id").is_none());
    }

    #[test]
    fn invalid_requests_are_code_2_with_the_id() {
        for (text, why, id) in [
            (
                r#"{"method":"FOO","id":5}"#,
                "unknown variant `FOO`",
                Value::from(5),
            ),
            (
                r#"{"params":["ethusdt@depth"],"id":6}"#,
                "missing field `method`",
                Value::from(6),
            ),
            (
                r#"{"method":"SUBSCRIBE","params":["ethusdt@depth"]}"#,
                "missing field `id`",
                Value::Null,
            ),
            (
                r#"{"method":"SUBSCRIBE","params":["ethusdt@depth"],"id":-1}"#,
                "invalid value",
                Value::Null,
            ),
            (
                r#"{"method":"SUBSCRIBE","params":"ethusdt@depth","id":7}"#,
                "invalid type",
                Value::from(7),
            ),
            (
                r#"{"method":"SUBSCRIBE","params":[1],"id":8}"#,
                "expected stream names",
                Value::from(8),
            ),
            (
                r#"{"method":"SUBSCRIBE","params":["eth usdt"],"id":9}"#,
                "invalid stream name",
                Value::from(9),
            ),
            (
                r#"{"method":"SUBSCRIBE","id":10}"#,
                "missing parameters",
                Value::from(10),
            ),
            (
                r#"{"method":"LIST_SUBSCRIPTIONS","params":["x@depth"],"id":11}"#,
                "too many parameters",
                Value::from(11),
            ),
            (
                r#"{"method":"SUBSCRIBE","params":["x@depth"],"id":12,"extra":1}"#,
                "unknown field",
                Value::from(12),
            ),
            ("[1,2]", "invalid type", Value::Null),
        ] {
            let e = error(text);
            assert_eq!(e["code"], 2, "{text}");
            let msg = e["msg"].as_str().unwrap();
            assert!(
                msg.starts_with("Invalid request: ") && msg.contains(why),
                "{text}: {msg}"
            );
            assert_eq!(e["id"], id, "{text}");
        }
    }
}
