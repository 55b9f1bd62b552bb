//! The services over plain gRPC (as internal callers use them) and over gRPC-web
//! through the gateway (as browsers do).

use agora_proto::auth::v1::auth_service_client::AuthServiceClient;
use agora_proto::auth::v1::{NewUser, RegisterRequest};
use agora_proto::user::v1::user_service_client::UserServiceClient;
use agora_proto::user::v1::{GetProfileRequest, GetProfileResponse};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;

use crate::helpers::{Backend, TestApp};

#[tokio::test]
async fn register_and_get_a_profile_over_grpc() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut auth = AuthServiceClient::connect(app.grpc_url()).await.unwrap();
    let mut users = UserServiceClient::connect(app.grpc_url()).await.unwrap();

    let registered = auth
        .register(RegisterRequest {
            user: Some(NewUser {
                username: "grpc".into(),
                email: "grpc@agora.test".into(),
                password: "password123".into(),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let profile = users
        .get_profile(GetProfileRequest {
            username: "grpc".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let missing = users
        .get_profile(GetProfileRequest {
            username: "nobody".into(),
        })
        .await
        .unwrap_err();

    assert_eq!(registered.user.unwrap().username, "grpc");
    assert_eq!(profile.profile.unwrap().username, "grpc");
    assert_eq!(missing.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn invalid_registration_over_grpc_carries_field_violations() {
    use tonic_types::StatusExt;
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut auth = AuthServiceClient::connect(app.grpc_url()).await.unwrap();

    let status = auth
        .register(RegisterRequest {
            user: Some(NewUser::default()),
        })
        .await
        .unwrap_err();

    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let fields: Vec<_> = status
        .get_details_bad_request()
        .unwrap()
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, ["username", "email", "password"]);
}

fn grpc_web_frame(message: &impl Message) -> Bytes {
    let body = message.encode_to_vec();
    let mut frame = BytesMut::with_capacity(5 + body.len());
    frame.put_u8(0);
    frame.put_u32(body.len() as u32);
    frame.put_slice(&body);
    frame.freeze()
}

#[tokio::test]
async fn the_same_call_works_over_grpc_web_through_the_gateway() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    app.signed_up("webby").await;

    let answer = app
        .send(
            "POST",
            "/agora.user.v1.UserService/GetProfile",
            None,
            &[
                ("content-type", "application/grpc-web+proto"),
                ("x-grpc-web", "1"),
            ],
            grpc_web_frame(&GetProfileRequest {
                username: "webby".into(),
            }),
        )
        .await;

    assert_eq!(answer.status, 200, "{:?}", answer.headers);
    let mut body = answer.raw.clone();
    assert_eq!(body.get_u8(), 0, "first frame carries data");
    let len = body.get_u32() as usize;
    let response = GetProfileResponse::decode(&body[..len]).unwrap();
    assert_eq!(response.profile.unwrap().username, "webby");
    body.advance(len);
    assert_eq!(body.get_u8(), 0x80, "then the trailer frame");
    let trailers = String::from_utf8_lossy(&body[4..]).to_lowercase();
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
}

#[tokio::test]
async fn internal_services_are_not_reachable_through_the_gateway() {
    let app = TestApp::spawn(Backend::Sqlite).await;

    let answer = app
        .send(
            "POST",
            "/agora.user.v1.UserInternalService/GetUser",
            None,
            &[("content-type", "application/grpc-web+proto")],
            Bytes::from_static(&[0, 0, 0, 0, 0]),
        )
        .await;

    let grpc_status = answer
        .headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    assert!(
        answer.status == 404 || grpc_status.as_deref() == Some("12"),
        "status {} grpc-status {grpc_status:?}",
        answer.status
    );
}

#[tokio::test]
async fn a_message_over_the_size_limit_is_refused_before_it_is_decoded() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut auth = AuthServiceClient::connect(app.grpc_url()).await.unwrap();

    let huge = "a".repeat(agora_kit::server::MAX_MESSAGE_BYTES + 1);
    let refused = auth
        .register(RegisterRequest {
            user: Some(NewUser {
                username: huge,
                email: "big@agora.test".into(),
                password: "password123".into(),
            }),
        })
        .await
        .unwrap_err();

    assert_eq!(refused.code(), tonic::Code::OutOfRange, "{refused:?}");
}
