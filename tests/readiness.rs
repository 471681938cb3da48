//! Readiness (`/ready`): 200 only when the database answers, migrations
//! are current and the secret key opens the stored canary.

use diesel::prelude::*;
use reqwest::StatusCode;

use crate::common::{expect, Backend, RequestHelper, TestApp};

#[actix_web::test]
async fn ready_when_database_migrations_and_canary_are_good_on_both_backends() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let app = TestApp::start(backend).await;
        let body = expect(app.anon().get("/ready").await, StatusCode::OK).await;
        assert_eq!(body["status"], "ready");
    }
}

#[actix_web::test]
async fn a_canary_the_secret_key_cannot_open_is_not_ready() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let app = TestApp::start(backend).await;
        expect(app.anon().get("/ready").await, StatusCode::OK).await;
        {
            use keygate::db::schema::settings;
            let mut conn = app.db.connect();
            diesel::update(settings::table.find(keygate::crypto::CANARY_SETTING))
                .set(settings::value.eq("not a canary"))
                .execute(&mut conn)
                .unwrap();
        }
        let body = expect(
            app.anon().get("/ready").await,
            StatusCode::SERVICE_UNAVAILABLE,
        )
        .await;
        assert!(body["detail"].as_str().unwrap().contains("canary"));
        // Liveness is unaffected.
        expect(app.anon().get("/health").await, StatusCode::OK).await;
    }
}
