//! actix-web handlers only: data plane, management API, operations. Each handler takes
//! extractors, calls one function below `http/`, and maps the result.

pub mod datasets;
pub mod envelope;
pub mod logs;
pub mod management;
pub mod ops;
pub mod origin;
pub mod proxy;
pub mod realtime;
pub mod routes;
pub mod tokens;
pub mod ui;

use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::{HttpRequest, HttpResponse, web};

use crate::error::Error;

/// Which surfaces a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surfaces {
    /// Everything on one listener.
    All,
    /// Data plane, management API and operations (the admin UI has its own listener).
    DataPlane,
    /// The admin UI and operations only (`admin_listen`).
    Admin,
}

/// Registers the routes of `surfaces`.
pub fn configure(cfg: &mut web::ServiceConfig, surfaces: Surfaces) {
    if surfaces != Surfaces::DataPlane {
        cfg.configure(ui::configure);
    }
    cfg.route("/healthz", web::get().to(ops::healthz))
        .route("/readyz", web::get().to(ops::readyz))
        .route("/metrics", web::get().to(ops::metrics));
    if surfaces != Surfaces::Admin {
        // Runs while the worker's app is built, on the worker's runtime.
        crate::gateway::stream::start_finisher();
        cfg.configure(data_plane_and_api);
    }
    cfg.default_service(web::to(not_found));
}

/// The data plane's requests go straight to it, ahead of the router: matching them against
/// the app's routes and marking the matched resource cost some 3,000 instructions a request,
/// and the pipeline splits the raw path itself. Everything else is routed. (The `/v1` scope
/// below stays for what the app lists as its routes.)
pub fn data_plane_first<S>(
    req: ServiceRequest,
    routed: &S,
) -> futures_util::future::Either<
    futures_util::future::LocalBoxFuture<'static, Result<ServiceResponse, actix_web::Error>>,
    S::Future,
>
where
    S: Service<ServiceRequest, Response = ServiceResponse, Error = actix_web::Error>,
{
    use futures_util::FutureExt as _;
    if is_data_plane(req.path()) {
        // Counted while it is served: the log writer rests between slices while requests come.
        let serving = crate::store::pace::serving();
        futures_util::future::Either::Left(
            proxy::data_plane(req)
                .map(move |answer| {
                    drop(serving);
                    answer
                })
                .boxed_local(),
        )
    } else {
        futures_util::future::Either::Right(routed.call(req))
    }
}

/// Whether a raw path is under the data plane's `/v1` prefix, as a whole segment (as the `/v1`
/// scope matches it).
fn is_data_plane(path: &str) -> bool {
    path.strip_prefix("/v1").is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

fn data_plane_and_api(cfg: &mut web::ServiceConfig) {
    use management as m;
    // The data plane first, as a static prefix: no pattern matching on the hot path (the
    // pipeline splits the raw path itself).
    cfg.service(web::scope("/v1").default_service(actix_web::dev::fn_service(proxy::data_plane)))
        .service(
            web::scope("/client/v4/accounts/{account_id}/ai")
                .default_service(actix_web::dev::fn_service(proxy::rest_unified)),
        )
        .service(
            web::scope("/client/v4/accounts/{account_id}/ai-gateway")
                .app_data(web::QueryConfig::default().error_handler(m::query_error))
                .app_data(web::PayloadConfig::new(1 << 20))
                .service(web::resource("/gateways").get(m::list_gateways).post(m::create_gateway))
                .service(
                    web::resource("/gateways/{id}")
                        .get(m::get_gateway)
                        .put(m::update_gateway)
                        .delete(m::delete_gateway),
                )
                .route("/gateways/{id}/url/{provider}", web::get().to(m::gateway_url))
                .service(web::resource("/gateways/{id}/logs").get(logs::list).delete(logs::delete))
                .service(web::resource("/gateways/{id}/logs/{log_id}").get(logs::get).patch(logs::patch))
                .route("/gateways/{id}/logs/{log_id}/request", web::get().to(logs::request_body))
                .route("/gateways/{id}/logs/{log_id}/response", web::get().to(logs::response_body))
                .route("/gateways/{id}/analytics", web::get().to(logs::report))
                .service(web::resource("/gateways/{id}/cache").get(m::cache_stats).delete(m::cache_purge))
                .service(web::resource("/gateways/{id}/provider_configs").get(m::list_keys).post(m::create_key))
                .route("/gateways/{id}/provider_configs/{key_id}", web::delete().to(m::delete_key))
                .service(web::resource("/gateways/{id}/routes").get(routes::list).post(routes::create))
                .service(
                    web::resource("/gateways/{id}/routes/{route}")
                        .get(routes::get)
                        .patch(routes::rename)
                        .delete(routes::delete),
                )
                .service(
                    web::resource("/gateways/{id}/routes/{route}/versions")
                        .get(routes::versions)
                        .post(routes::add_version),
                )
                .route("/gateways/{id}/routes/{route}/versions/{version}", web::get().to(routes::version))
                .service(
                    web::resource("/gateways/{id}/routes/{route}/deployments")
                        .get(routes::deployments)
                        .post(routes::deploy),
                )
                .service(web::resource("/gateways/{id}/aliases").get(routes::list_aliases).post(routes::create_alias))
                .service(web::resource("/gateways/{id}/datasets").get(datasets::list).post(datasets::create))
                .service(
                    web::resource("/gateways/{id}/datasets/{ds}")
                        .get(datasets::get)
                        .put(datasets::update)
                        .delete(datasets::delete),
                )
                .service(
                    web::resource("/gateways/{id}/evaluations")
                        .get(datasets::list_evaluations)
                        .post(datasets::create_evaluation),
                )
                .service(
                    web::resource("/gateways/{id}/evaluations/{ev}")
                        .get(datasets::get_evaluation)
                        .delete(datasets::delete_evaluation),
                )
                .route("/evaluation-types", web::get().to(datasets::types))
                .service(
                    web::resource("/gateways/{id}/aliases/{name}").put(routes::put_alias).delete(routes::delete_alias),
                )
                .service(web::resource("/tokens").get(tokens::list).post(tokens::create))
                .route("/tokens/{id}", web::delete().to(tokens::revoke))
                .service(web::resource("/custom-providers").get(m::list_custom).post(m::create_custom))
                .service(
                    web::resource("/custom-providers/{id}")
                        .get(m::get_custom)
                        .patch(m::update_custom)
                        .put(m::update_custom)
                        .delete(m::delete_custom),
                )
                .service(web::resource("/dlp/profiles").get(m::list_dlp).post(m::create_dlp))
                .service(
                    web::resource("/dlp/profiles/{id}")
                        .get(m::get_dlp)
                        .patch(m::update_dlp)
                        .put(m::update_dlp)
                        .delete(m::delete_dlp),
                )
                .default_service(web::to(management_not_found)),
        );
}

async fn management_not_found(req: HttpRequest) -> Result<HttpResponse, envelope::ApiError> {
    Err(Error::no_route(req.path()).into())
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    envelope::data_plane_error(&Error::no_route(req.path()))
}

#[cfg(test)]
mod tests {
    use super::is_data_plane;

    /// The fast path takes `/v1` as a whole segment only; anything else goes to the router.
    #[test]
    fn the_data_plane_prefix_is_a_whole_segment() {
        for path in ["/v1", "/v1/", "/v1/local/default/openai/chat/completions", "/v1//x"] {
            assert!(is_data_plane(path), "{path}");
        }
        for path in ["/", "/v1x", "/v10/local", "/v", "/V1/local", "/%76%31/local", "/client/v4/accounts/a/ai/v1"] {
            assert!(!is_data_plane(path), "{path}");
        }
    }
}
