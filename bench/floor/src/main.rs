//! The floor of `bench/peers/run`: what a bare axum server answers per second on this
//! machine when every request gets the same body, with no authorization and no database.
//! Hestia's authorized read is measured against it.
//!
//! Usage: `floor ADDR:PORT BODY_FILE` (the body is served as `application/fhir+json`).

use axum::Router;
use axum::http::header;
use axum::routing::get;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(body_file)) = (args.next(), args.next()) else {
        eprintln!("usage: floor ADDR:PORT BODY_FILE");
        std::process::exit(2);
    };
    let body: &'static [u8] = match std::fs::read(&body_file) {
        Ok(bytes) => bytes.leak(),
        Err(e) => {
            eprintln!("floor: cannot read {body_file}: {e}");
            std::process::exit(1);
        }
    };
    let answer = move || async move { ([(header::CONTENT_TYPE, "application/fhir+json")], body) };
    let app = Router::new().fallback(get(answer));
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("floor: cannot listen on {listen}: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("floor: {e}");
        std::process::exit(1);
    }
}
