//! The `weft.test.Echo` gRPC service's messages and method paths, written
//! out by hand instead of generated from a .proto:
//!
//! ```proto
//! package weft.test;
//! service Echo {
//!   rpc Unary(EchoRequest) returns (EchoReply);
//!   rpc Chat(stream EchoRequest) returns (stream EchoReply);
//!   rpc Fail(EchoRequest) returns (EchoReply);
//! }
//! message EchoRequest { string message = 1; int32 code = 2; }
//! message EchoReply { string message = 1; string server = 2; int32 count = 3; }
//! ```

use serde::Serialize;

/// `/weft.test.Echo/Unary`.
pub const UNARY: &str = "/weft.test.Echo/Unary";
/// `/weft.test.Echo/Chat`.
pub const CHAT: &str = "/weft.test.Echo/Chat";
/// `/weft.test.Echo/Fail`.
pub const FAIL: &str = "/weft.test.Echo/Fail";

/// `weft.test.EchoRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoRequest {
    #[prost(string, tag = "1")]
    pub message: String,
    /// The gRPC status code `Fail` answers with.
    #[prost(int32, tag = "2")]
    pub code: i32,
}

/// `weft.test.EchoReply`; also `grpc-call`'s output line.
#[derive(Clone, PartialEq, Serialize, prost::Message)]
pub struct EchoReply {
    #[prost(string, tag = "1")]
    pub message: String,
    /// The replying server's name.
    #[prost(string, tag = "2")]
    pub server: String,
    /// The index of the request this replies to in a `Chat` stream.
    #[prost(int32, tag = "3")]
    pub count: i32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn wire_format_matches_the_proto() {
        // Field 1 (string, "hi"), field 2 (varint 5).
        let req = EchoRequest {
            message: "hi".into(),
            code: 5,
        };
        assert_eq!(req.encode_to_vec(), [0x0a, 2, b'h', b'i', 0x10, 5]);
        let reply = EchoReply {
            message: "m".into(),
            server: "s".into(),
            count: 2,
        };
        assert_eq!(
            reply.encode_to_vec(),
            [0x0a, 1, b'm', 0x12, 1, b's', 0x18, 2]
        );
        assert_eq!(
            EchoReply::decode(&reply.encode_to_vec()[..]).unwrap(),
            reply
        );
    }

    #[test]
    fn reply_line() {
        let reply = EchoReply {
            message: "hello".into(),
            server: "web-1".into(),
            count: 0,
        };
        assert_eq!(
            serde_json::to_string(&reply).unwrap(),
            r#"{"message":"hello","server":"web-1","count":0}"#
        );
    }
}
