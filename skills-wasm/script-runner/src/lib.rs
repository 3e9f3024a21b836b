//! The script runner: JavaScript script skills, interpreted with Boa.
//!
//! The host hands it a script's source with every call. A script declares
//! `const manifest = {...}` (name, version, description, tools, and
//! `capabilities` as a component asks for them) and one function per tool,
//! named as the tool, taking the arguments object. Each call evaluates the
//! source afresh in a new interpreter: nothing survives a call but kv.
//!
//! The API a script sees (every call goes to the host, which checks it
//! against the script's own grants; a denial is thrown as an `Error` whose
//! `code` is `denied`, `invalid-input`, `not-found` or `failed`):
//! - `kv.get(key)` (a string or null), `kv.set(key, value)`, `kv.delete(key)`, `kv.list(prefix)`
//! - `log(...)`, `console.log(...)`
//! - `config.get(key)` (a string or null)
//! - `fetch(url, {method, headers, body})`: `{status, headers, text}`, synchronous
//! - `memory.search(query, limit)`, `memory.save(text, tags)`
//! - `notify.send(text)`
//! - `hmac(secret, data)`: hex of HMAC-SHA256 with a secret the script names but never reads

use boa_engine::object::ObjectInitializer;
use boa_engine::property::Attribute;
use boa_engine::{
    Context, JsError, JsNativeError, JsResult, JsValue, NativeFunction, Source, builtins::promise::PromiseState,
    js_string,
};
use serde_json::{Value, json};
use wasiclaw_sdk::script::{ScriptRunner, export_script_runner};
use wasiclaw_sdk::{Capabilities, Error, HttpRule, Manifest, Rights, Tool, config, crypto, http, kv, memory, notify};

struct Runner;

/// The deepest JS recursion allowed: a runaway recursion ends as a
/// `RangeError` long before it could exhaust the component's stack.
const RECURSION_LIMIT: usize = 400;

impl ScriptRunner for Runner {
    fn describe(source: String) -> Result<Manifest, Error> {
        let mut ctx = interpreter(&source)?;
        let declared = ctx.eval(Source::from_bytes("typeof manifest === 'object' ? manifest : undefined"));
        let json = declared
            .and_then(|v| v.to_json(&mut ctx))
            .map_err(|e| Error::InvalidInput(format!("the manifest: {}", describe_js_error(e, &mut ctx))))?
            .ok_or_else(|| Error::InvalidInput("the script declares no `const manifest = {...}`".into()))?;
        let manifest = manifest(&json)?;
        for tool in &manifest.tools {
            let check = format!("typeof {} === 'function'", identifier(&tool.name)?);
            if ctx.eval(Source::from_bytes(&check)).ok().and_then(|v| v.as_boolean()) != Some(true) {
                return Err(Error::InvalidInput(format!("tool {} has no function of that name", tool.name)));
            }
        }
        Ok(manifest)
    }

    fn invoke(source: String, tool: String, args_json: String) -> Result<String, Error> {
        let mut ctx = interpreter(&source)?;
        let function = ctx
            .eval(Source::from_bytes(identifier(&tool)?))
            .ok()
            .and_then(|f| f.as_callable())
            .ok_or_else(|| Error::NotFound(format!("no tool {tool}")))?;
        let args: Value =
            serde_json::from_str(&args_json).map_err(|e| Error::InvalidInput(format!("arguments: {e}")))?;
        let args = JsValue::from_json(&args, &mut ctx).map_err(|e| thrown(e, &mut ctx))?;
        let mut result = function.call(&JsValue::undefined(), &[args], &mut ctx).map_err(|e| thrown(e, &mut ctx))?;
        if let Some(promise) = result.as_promise() {
            ctx.run_jobs().map_err(|e| thrown(e, &mut ctx))?;
            result = match promise.state() {
                PromiseState::Fulfilled(v) => v,
                PromiseState::Rejected(e) => return Err(thrown(JsError::from_opaque(e), &mut ctx)),
                PromiseState::Pending => return Err(Error::Failed("the tool's promise never settled".into())),
            };
        }
        if let Some(s) = result.as_string() {
            return Ok(s.to_std_string_escaped());
        }
        // JSON as JavaScript writes it (`2`, not `2.0`).
        let stringify = ctx
            .eval(Source::from_bytes("(v) => JSON.stringify(v === undefined ? null : v)"))
            .map_err(|e| thrown(e, &mut ctx))?;
        let json = stringify
            .as_callable()
            .expect("an arrow function")
            .call(&JsValue::undefined(), &[result], &mut ctx)
            .map_err(|e| thrown(e, &mut ctx))?;
        Ok(json.to_string(&mut ctx).map_err(|e| thrown(e, &mut ctx))?.to_std_string_escaped())
    }
}

export_script_runner!(Runner with_types_in wasiclaw_sdk::script::bindings);

/// A tool name as a JS identifier: it is evaluated to find the function.
fn identifier(name: &str) -> Result<&str, Error> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok { Ok(name) } else { Err(Error::InvalidInput(format!("tool name {name:?} is not a JS identifier"))) }
}

/// A fresh interpreter with the API installed and the script evaluated.
fn interpreter(source: &str) -> Result<Context, Error> {
    let mut ctx = Context::default();
    ctx.runtime_limits_mut().set_recursion_limit(RECURSION_LIMIT);
    install(&mut ctx).map_err(|e| Error::Failed(format!("cannot set up the interpreter: {e}")))?;
    ctx.eval(Source::from_bytes(source))
        .map_err(|e| Error::InvalidInput(format!("the script: {}", describe_js_error(e, &mut ctx))))?;
    Ok(ctx)
}

/// A manifest object as the contract's record.
fn manifest(json: &Value) -> Result<Manifest, Error> {
    let text = |key: &str| json[key].as_str().map(str::to_string);
    let bad = |what: &str| Error::InvalidInput(format!("manifest: {what}"));
    let tools = json["tools"].as_array().ok_or_else(|| bad("`tools` must be a list"))?;
    let tools = tools
        .iter()
        .map(|t| {
            Ok(Tool {
                name: t["name"].as_str().ok_or_else(|| bad("every tool needs a `name`"))?.into(),
                description: t["description"].as_str().unwrap_or_default().into(),
                parameters: t.get("parameters").cloned().unwrap_or(json!({"type": "object"})).to_string(),
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let caps = &json["capabilities"];
    let http = caps["http"].as_array().cloned().unwrap_or_default();
    let http = http
        .iter()
        .map(|r| {
            let strings = |v: &Value| -> Vec<String> {
                v.as_array()
                    .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
                    .unwrap_or_default()
            };
            let headers = r["headers"]
                .as_object()
                .map(|h| h.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect());
            Ok(HttpRule {
                url: r["url"].as_str().ok_or_else(|| bad("every http rule needs a `url`"))?.into(),
                methods: strings(&r["methods"]),
                headers: headers.unwrap_or_default(),
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let secrets = caps["secrets"].as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect());
    let mut rights = Rights::empty();
    for (key, right) in [
        ("kv", Rights::KV),
        ("notify", Rights::NOTIFY),
        ("memory_read", Rights::MEMORY_READ),
        ("memory_write", Rights::MEMORY_WRITE),
    ] {
        if caps[key] == true {
            rights |= right;
        }
    }
    if caps["files"] == true {
        return Err(bad("script skills cannot ask for `files`"));
    }
    Ok(Manifest {
        name: text("name").ok_or_else(|| bad("`name` is missing"))?,
        version: text("version").unwrap_or_else(|| "0.1.0".into()),
        description: text("description").unwrap_or_default(),
        tools,
        capabilities: Capabilities { http, secrets: secrets.unwrap_or_default(), rights },
    })
}

/// A JS exception as the contract's error: a thrown `{code, message}`
/// keeps its kind (a host denial the script rethrew stays a denial).
fn thrown(e: JsError, ctx: &mut Context) -> Error {
    let code = e
        .as_opaque()
        .and_then(|v| v.as_object())
        .and_then(|o| o.get(js_string!("code"), ctx).ok())
        .and_then(|c| c.as_string().map(|s| s.to_std_string_escaped()));
    let message = describe_js_error(e, ctx);
    match code.as_deref() {
        Some("denied") => Error::Denied(message),
        Some("invalid-input") => Error::InvalidInput(message),
        Some("not-found") => Error::NotFound(message),
        _ => Error::Failed(message),
    }
}

fn describe_js_error(e: JsError, ctx: &mut Context) -> String {
    match e.try_native(ctx) {
        Ok(native) => native.message().to_string(),
        Err(_) => e.as_opaque().map(|v| v.display().to_string()).unwrap_or_else(|| e.to_string()),
    }
}

/// A host error, thrown as an `Error` with a `code` the script can test.
fn throw(e: Error, ctx: &mut Context) -> JsError {
    let (code, message) = match e {
        Error::Denied(m) => ("denied", m),
        Error::InvalidInput(m) => ("invalid-input", m),
        Error::NotFound(m) => ("not-found", m),
        Error::Failed(m) => ("failed", m),
    };
    let error = JsNativeError::error().with_message(message).into_opaque(ctx);
    if let Err(e) = error.set(js_string!("code"), js_string!(code), false, ctx) {
        return e;
    }
    JsError::from_opaque(error.into())
}

/// Argument `i` as a string (undefined and null as "").
fn arg(args: &[JsValue], i: usize, ctx: &mut Context) -> JsResult<String> {
    match args.get(i) {
        None => Ok(String::new()),
        Some(v) if v.is_null_or_undefined() => Ok(String::new()),
        Some(v) => Ok(v.to_string(ctx)?.to_std_string_escaped()),
    }
}

fn string_or_null(s: Option<String>) -> JsValue {
    s.map_or(JsValue::null(), |s| JsValue::from(js_string!(s)))
}

fn json_value(v: Value, ctx: &mut Context) -> JsResult<JsValue> {
    JsValue::from_json(&v, ctx)
}

fn install(ctx: &mut Context) -> JsResult<()> {
    fn kv_get(_: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
        let key = arg(args, 0, ctx)?;
        let value = kv::get(&key).map_err(|e| throw(e, ctx))?;
        Ok(string_or_null(value.map(|b| String::from_utf8_lossy(&b).into_owned())))
    }
    fn kv_set(_: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
        let (key, value) = (arg(args, 0, ctx)?, arg(args, 1, ctx)?);
        kv::set(&key, value.as_bytes()).map_err(|e| throw(e, ctx))?;
        Ok(JsValue::undefined())
    }
    fn kv_delete(_: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
        let key = arg(args, 0, ctx)?;
        kv::delete(&key).map_err(|e| throw(e, ctx))?;
        Ok(JsValue::undefined())
    }
    fn kv_list(_: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
        let prefix = arg(args, 0, ctx)?;
        let keys = kv::list_keys(&prefix).map_err(|e| throw(e, ctx))?;
        json_value(json!(keys), ctx)
    }
    fn log(_: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
        let parts = (0..args.len()).map(|i| arg(args, i, ctx)).collect::<JsResult<Vec<_>>>()?;
        wasiclaw_sdk::log_info(&parts.join(" "));
        Ok(JsValue::undefined())
    }
    fn config_get(_: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
        Ok(string_or_null(config::get(&arg(args, 0, ctx)?)))
    }
    fn fetch(_: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
        let url = arg(args, 0, ctx)?;
        let options = match args.get(1) {
            Some(o) if !o.is_null_or_undefined() => o.to_json(ctx)?.unwrap_or_default(),
            _ => Value::Null,
        };
        let method = options["method"].as_str().unwrap_or("GET").to_string();
        let headers: Vec<(String, String)> = options["headers"]
            .as_object()
            .map(|h| {
                h.iter().map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string))).collect()
            })
            .unwrap_or_default();
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let body = match &options["body"] {
            Value::Null => None,
            Value::String(s) => Some(s.clone().into_bytes()),
            other => Some(other.to_string().into_bytes()),
        };
        let response = http::request(&method, &url, &headers, body.as_deref()).map_err(|e| throw(e, ctx))?;
        let headers: serde_json::Map<String, Value> = response
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), String::from_utf8_lossy(v).into_owned().into()))
            .collect();
        json_value(json!({"status": response.status, "headers": headers, "text": response.text()}), ctx)
    }
    fn memory_search(_: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
        let query = arg(args, 0, ctx)?;
        let limit = args.get(1).map(|l| l.to_u32(ctx)).transpose()?.unwrap_or(5);
        let hits = memory::search(&query, limit).map_err(|e| throw(e, ctx))?;
        let hits: Vec<Value> = hits
            .into_iter()
            .map(|h| json!({"id": h.id, "text": h.text, "tags": h.tags, "created": h.created, "score": h.score}))
            .collect();
        json_value(Value::Array(hits), ctx)
    }
    fn memory_save(_: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
        let text = arg(args, 0, ctx)?;
        let tags = match args.get(1) {
            Some(t) if !t.is_null_or_undefined() => t.to_json(ctx)?.unwrap_or_default(),
            _ => Value::Null,
        };
        let tags: Vec<String> = tags
            .as_array()
            .map(|a| a.iter().filter_map(|t| t.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        let id = memory::save(&text, &tags).map_err(|e| throw(e, ctx))?;
        Ok(JsValue::from(id as f64))
    }
    fn notify_send(_: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
        let text = arg(args, 0, ctx)?;
        notify::send(&text).map_err(|e| throw(e, ctx))?;
        Ok(JsValue::undefined())
    }
    fn hmac(_: &JsValue, args: &[JsValue], ctx: &mut Context) -> JsResult<JsValue> {
        let (secret, data) = (arg(args, 0, ctx)?, arg(args, 1, ctx)?);
        let mac = crypto::hmac_sha256(&secret, data.as_bytes()).map_err(|e| throw(e, ctx))?;
        Ok(JsValue::from(js_string!(wasiclaw_sdk::channel::hex(&mac))))
    }

    let object = |ctx: &mut Context, functions: &[(&str, NativeFunction, usize)]| {
        let mut init = ObjectInitializer::new(ctx);
        for (name, f, length) in functions {
            init.function(f.clone(), js_string!(*name), *length);
        }
        init.build()
    };
    let kv = object(
        ctx,
        &[
            ("get", NativeFunction::from_fn_ptr(kv_get), 1),
            ("set", NativeFunction::from_fn_ptr(kv_set), 2),
            ("delete", NativeFunction::from_fn_ptr(kv_delete), 1),
            ("list", NativeFunction::from_fn_ptr(kv_list), 1),
        ],
    );
    let config = object(ctx, &[("get", NativeFunction::from_fn_ptr(config_get), 1)]);
    let memory = object(
        ctx,
        &[
            ("search", NativeFunction::from_fn_ptr(memory_search), 2),
            ("save", NativeFunction::from_fn_ptr(memory_save), 2),
        ],
    );
    let notify = object(ctx, &[("send", NativeFunction::from_fn_ptr(notify_send), 1)]);
    let console = object(ctx, &[("log", NativeFunction::from_fn_ptr(log), 1)]);
    for (name, value) in [("kv", kv), ("config", config), ("memory", memory), ("notify", notify), ("console", console)]
    {
        ctx.register_global_property(js_string!(name), value, Attribute::all())?;
    }
    ctx.register_global_builtin_callable(js_string!("log"), 1, NativeFunction::from_fn_ptr(log))?;
    ctx.register_global_builtin_callable(js_string!("fetch"), 2, NativeFunction::from_fn_ptr(fetch))?;
    ctx.register_global_builtin_callable(js_string!("hmac"), 2, NativeFunction::from_fn_ptr(hmac))?;
    Ok(())
}
