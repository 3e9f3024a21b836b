//! The `script-runner` world's bindings, for the script interpreter: it
//! shares the skill world's imports, so the SDK's HTTP client and host
//! interfaces work unchanged inside it.

pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "wasiclaw:plugin/script-runner",
        pub_export_macro: true,
        export_macro_name: "export_script_runner",
        default_bindings_module: "wasiclaw_sdk::script::bindings",
        with: {
            "wasiclaw:plugin/types@0.2.0": crate::bindings::wasiclaw::plugin::types,
            "wasiclaw:plugin/kv@0.2.0": crate::bindings::wasiclaw::plugin::kv,
            "wasiclaw:plugin/log@0.2.0": crate::bindings::wasiclaw::plugin::log,
            "wasiclaw:plugin/config@0.2.0": crate::bindings::wasiclaw::plugin::config,
            "wasiclaw:plugin/crypto@0.2.0": crate::bindings::wasiclaw::plugin::crypto,
            "wasiclaw:plugin/memory@0.2.0": crate::bindings::wasiclaw::plugin::memory,
            "wasiclaw:plugin/notify@0.2.0": crate::bindings::wasiclaw::plugin::notify,
            "wasi:http/types@0.2.12": crate::bindings::wasi::http::types,
            "wasi:http/outgoing-handler@0.2.12": crate::bindings::wasi::http::outgoing_handler,
            "wasi:io/error@0.2.12": crate::bindings::wasi::io::error,
            "wasi:io/poll@0.2.12": crate::bindings::wasi::io::poll,
            "wasi:io/streams@0.2.12": crate::bindings::wasi::io::streams,
            "wasi:clocks/monotonic-clock@0.2.12": crate::bindings::wasi::clocks::monotonic_clock,
        },
    });
}

pub use bindings::export_script_runner;
pub use bindings::exports::wasiclaw::plugin::script_api::Guest as ScriptRunner;
