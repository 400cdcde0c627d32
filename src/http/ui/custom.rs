//! Custom providers (`custom-{slug}`): list, create, edit, delete.

use actix_web::{HttpResponse, web};
use askama::Template;

use super::Control;
use super::forms::{Errors, Fields, json_body};
use super::gateways::ConfirmPage;
use super::{Admin, AdminForm, Layout, UiError, blocking, render, render_checked, see_other};
use crate::control::custom_providers::{self, ListFilter};
use crate::store::CustomProviderRecord;

const TEXTS: &[&str] = &["name", "slug", "base_url", "description", "link"];
const CHECKBOXES: &[&str] = &["enable", "beta"];
const REQUIRED: &[&str] = &["name", "slug", "base_url"];

fn body_of(f: &Fields, errors: &mut Errors) -> crate::control::input::Body {
    for name in REQUIRED {
        if f.get(name).is_empty() {
            errors.add(name, "is required");
        }
    }
    json_body(f, &[], CHECKBOXES, TEXTS, errors)
}

fn fields_of(p: &CustomProviderRecord) -> Fields {
    let mut f = Fields::default();
    f.set("name", p.name.clone());
    f.set("slug", p.slug.clone());
    f.set("base_url", p.base_url.clone());
    f.set("description", p.description.clone().unwrap_or_default());
    f.set("link", p.link.clone().unwrap_or_default());
    if p.enable {
        f.set("enable", "on");
    }
    if p.beta {
        f.set("beta", "on");
    }
    f
}

#[derive(Template)]
#[template(path = "custom_providers.html")]
struct ListPage {
    page: Layout,
    providers: Vec<CustomProviderRecord>,
    v: Fields,
    errors: Errors,
}

async fn list_page(who: &Admin, gw: &Control, v: Fields, errors: Errors) -> Result<HttpResponse, UiError> {
    let providers = blocking(gw, |s| Ok(custom_providers::list(s, &ListFilter::default())?)).await?;
    let valid = errors.is_empty();
    let resp = render_checked(
        valid,
        &ListPage { page: Layout::new(who, "custom", "Custom providers"), providers, v, errors },
    )?;
    Ok(resp)
}

/// `GET /admin/custom-providers`
pub async fn list(who: Admin, gw: Control) -> Result<HttpResponse, UiError> {
    let mut v = Fields::default();
    v.set("enable", "on");
    list_page(&who, &gw, v, Errors::default()).await
}

/// `POST /admin/custom-providers`
pub async fn create(gw: Control, AdminForm { who, form: f }: AdminForm) -> Result<HttpResponse, UiError> {
    let mut errors = Errors::default();
    let body = body_of(&f, &mut errors);
    if !errors.is_empty() {
        return list_page(&who, &gw, f, errors).await;
    }
    let account = gw.config().account_id.clone();
    match blocking(&gw, move |s| Ok(custom_providers::create(s, &account, &body))).await? {
        Ok(p) => Ok(see_other(&format!("/admin/custom-providers/{}", p.id))),
        Err(e) => {
            errors.add_error(&e, "slug");
            list_page(&who, &gw, f, errors).await
        }
    }
}

#[derive(Template)]
#[template(path = "custom_provider.html")]
struct EditPage {
    page: Layout,
    id: String,
    v: Fields,
    errors: Errors,
}

/// `GET /admin/custom-providers/{id}`
pub async fn show(who: Admin, gw: Control, path: web::Path<String>) -> Result<HttpResponse, UiError> {
    let id = path.into_inner();
    let p = blocking(&gw, move |s| Ok(custom_providers::get(s, &id)?)).await?;
    render(&EditPage {
        page: Layout::new(&who, "custom", format!("Custom provider {}", p.slug)),
        v: fields_of(&p),
        id: p.id,
        errors: Errors::default(),
    })
}

/// `POST /admin/custom-providers/{id}`
pub async fn update(
    gw: Control,
    path: web::Path<String>,
    AdminForm { who, form: f }: AdminForm,
) -> Result<HttpResponse, UiError> {
    let id = path.into_inner();
    let mut errors = Errors::default();
    let body = body_of(&f, &mut errors);
    let target = id.clone();
    let valid = errors.is_empty();
    let (slug, outcome) = blocking(&gw, move |s| {
        let current = custom_providers::get(s, &target)?;
        Ok((current.slug, valid.then(|| custom_providers::update(s, &target, &body))))
    })
    .await?;
    match outcome {
        Some(Ok(_)) => return Ok(see_other(&format!("/admin/custom-providers/{id}"))),
        Some(Err(e)) => errors.add_error(&e, "slug"),
        None => {}
    }
    render_checked(
        false,
        &EditPage { page: Layout::new(&who, "custom", format!("Custom provider {slug}")), id, v: f, errors },
    )
}

/// `GET /admin/custom-providers/{id}/delete`
pub async fn confirm_delete(who: Admin, gw: Control, path: web::Path<String>) -> Result<HttpResponse, UiError> {
    let id = path.into_inner();
    let p = blocking(&gw, move |s| Ok(custom_providers::get(s, &id)?)).await?;
    render(&ConfirmPage {
        page: Layout::new(&who, "custom", "Delete custom provider"),
        question: format!("Delete custom provider '{}'?", p.slug),
        detail: format!("Requests to custom-{} fail from then on.", p.slug),
        action: format!("/admin/custom-providers/{}/delete", p.id),
        hidden: Vec::new(),
        back: format!("/admin/custom-providers/{}", p.id),
    })
}

/// `POST /admin/custom-providers/{id}/delete`
pub async fn delete(gw: Control, path: web::Path<String>, _: AdminForm) -> Result<HttpResponse, UiError> {
    let id = path.into_inner();
    blocking(&gw, move |s| Ok(custom_providers::delete(s, &id)?)).await?;
    Ok(see_other("/admin/custom-providers"))
}
