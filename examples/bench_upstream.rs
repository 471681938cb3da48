//! A minimal upstream for `scripts/bench.sh`: answers every request with a
//! small Langflow-like JSON body, so the benchmark can compare calling it
//! directly with calling it through keygate's `/api/v1/run`.
//!
//! Usage: `cargo run --release --example bench_upstream -- 127.0.0.1:9901`

use actix_web::{web, App, HttpResponse, HttpServer};

async fn answer(body: web::Bytes) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "session_id": "bench",
        "outputs": [{"received_bytes": body.len()}],
    }))
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9901".into());
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(|| App::new().default_service(web::to(answer)))
            .workers(1)
            .bind(addr)?
            .run()
            .await
    })
}
