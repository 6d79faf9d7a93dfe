//! The node's OpenAPI 3 document, served at `/v1/openapi.json`.

use serde_json::{Value, json};

use crate::auth::Need;

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn name_param() -> Value {
    json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,62}$"}})
}

fn store_param() -> Value {
    json!({"name": "store", "in": "path", "required": true, "schema": {"type": "string", "pattern": "^[a-z0-9_-]{1,64}$"}})
}

fn key_param() -> Value {
    json!({"name": "key", "in": "path", "required": true, "schema": {"type": "string"}, "description": "Any UTF-8 key, percent-encoded"})
}

/// Adds to every operation what it needs of the caller, from [`super::ROUTES`]: the
/// security requirement, the roles (`x-limes-roles`) and the 401 and 403 answers.
fn annotate_security(doc: &mut Value) {
    for (method, path, need) in super::ROUTES {
        let Some(op) = doc["paths"][path].get_mut(*method) else {
            continue;
        };
        let roles: Vec<&str> = need.roles().iter().map(|r| r.as_str()).collect();
        match need {
            Need::Nothing => op["security"] = json!([]),
            _ => {
                op["security"] = json!([{"bearer": []}]);
                op["x-limes-roles"] = json!(roles);
                op["responses"]["401"] =
                    error_response("No token, or an unknown, revoked or expired one");
                op["responses"]["403"] = error_response("The token's role does not allow this");
            }
        }
        if *need == Need::Function {
            op["description"] = json!(format!(
                "{} A function deployed with `public=true` needs no token.",
                op["description"].as_str().unwrap_or_default()
            ));
        }
    }
}

/// The document. Every route in [`super::ROUTES`] is described; a test holds it to that.
pub fn document() -> Value {
    let mut doc = paths();
    if let (Some(paths), Value::Object(more)) = (doc["paths"].as_object_mut(), workflow_paths()) {
        paths.extend(more);
    }
    annotate_security(&mut doc);
    doc
}

fn paths() -> Value {
    // Each capability describes its own keys.
    let described: std::collections::HashMap<_, _> = crate::capabilities::Sections::keys()
        .chain(crate::triggers::Triggers::keys())
        .collect();
    let manifest_params: Vec<Value> = crate::manifest::keys()
        .map(|k| {
            let mut param =
                json!({"name": k, "in": "query", "required": false, "schema": {"type": "string"}});
            if let Some(text) = described.get(k) {
                param["description"] = json!(text);
            }
            param
        })
        .collect();
    let mut deploy_params = vec![name_param()];
    deploy_params.extend(manifest_params);
    json!({
        "openapi": "3.0.3",
        "security": [{"bearer": []}],
        "info": {"title": "Limes node API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Deploy and invoke WebAssembly functions on a Limes edge node."},
        "paths": {
            "/healthz": {"get": {"summary": "Liveness: {\"status\":\"ok\",\"clustered\":bool}, nothing more (the cluster view is GET /v1/cluster)", "responses": {"200": {"description": "The node serves"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "Text exposition format"}}}},
            "/v1/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3"}}}},
            "/v1/stats": {"get": {"summary": "Live figures for the dashboard: per function invocations, errors and cold-start and execution p50/p99 (µs) since the node started; for the node, in flight, capacity and one sample per second over the last five minutes (requests, errors, calls turned away, most in flight, p50/p99 function time)",
                "responses": {"200": {"description": "`{node, in_flight, capacity, functions: [{name, invocations, errors, cold_start_us: {p50, p99}, execution_us: {p50, p99}}], seconds: [{at, requests, errors, shed, in_flight, latency_us: {p50, p99}}], kv: [{function, store, keys, bytes}]}`; poll it (the dashboard does, every second)"}}}},
            "/ui": {"get": {"summary": "The operators' dashboard (HTML; its assets are in the binary, nothing is fetched from elsewhere). It asks for a token and sends it in the Authorization header only",
                "responses": {"200": {"description": "The page"}}}},
            "/ui/{asset}": {"get": {"summary": "The dashboard's script and style", "parameters": [{"name": "asset", "in": "path", "required": true, "schema": {"type": "string", "enum": ["dashboard.js", "dashboard.css"]}}],
                "responses": {"200": {"description": "The asset"}, "404": error_response("No such asset")}}},
            "/v1/functions": {"get": {"summary": "List functions", "responses": {"200": {"description": "Every function with its active version"}}}},
            "/v1/functions/{name}": {
                "get": {"summary": "A function with all its versions", "parameters": [name_param()],
                        "responses": {"200": {"description": "The function"}, "404": error_response("No such function")}},
                "put": {"summary": "Deploy a new version",
                        "parameters": deploy_params,
                        "requestBody": {"required": true, "content": {
                            "application/wasm": {"schema": {"type": "string", "format": "binary"}},
                            "multipart/form-data": {"schema": {"type": "object", "properties": {
                                "component": {"type": "string", "format": "binary"},
                                "source": {"type": "string", "description": "oci://HOST/REPO:TAG or @sha256:…, instead of component"},
                                "manifest": {"type": "string"}}}}}},
                        "description": "The body is the component (application/wasm) with the manifest as query parameters, or multipart/form-data with parts `component`, `manifest` (JSON with the same keys) and optionally `signature`. Instead of the component, an `oci://HOST/REPO:TAG` (or `@sha256:…`) reference in the `x-limes-source` header (with an empty body) or a `source` part has the node pull the component from that OCI registry with the operator's credentials; the version and the audit log record the digest pulled (`source`), and a pull that fails (`artifact-not-found`, `registry-unauthorized`, `not-wasm`, `digest-mismatch`, `registry-unreachable`) leaves the active version serving. A detached Ed25519 signature may also come in the `x-limes-signature` header; a node started with --trusted-keys requires one. A deploy can take seconds (compiling, pre-initializing, replicating). It runs to its end even if the client disconnects, and every response names it in the `x-limes-deploy` header. With `Accept: application/x-ndjson` the node answers 200 at once and streams one JSON line per stage (`validate`, `pull`, `pre-initialize`, `compile`, `store`, `replicate`, `done`), repeats the current stage every 5 s while it lasts (`heartbeat: true`), and ends with a `done` line whose `outcome` is `{deployed: version}` or `{failed: {status, kind, message}}`. A client that lost the connection asks `GET /v1/deploys/{id}` for the outcome.",
                        "responses": {"201": {"description": "Deployed", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Deployed"}}}},
                                      "200": {"description": "With `Accept: application/x-ndjson`: the deploy's progress, one JSON line per stage; the outcome is in the last line", "content": {"application/x-ndjson": {"schema": {"type": "string"}}}},
                                      "400": error_response("Invalid name, manifest or component; `unsigned` or `bad-signature` on a node that requires signatures"),
                                      "403": error_response("`not-permitted`: the manifest asks for host directories or networks beyond the node's --allow-host-dir / --allow-egress (or `forbidden`: the token's role)"),
                                      "413": {"description": "Body too large"}}},
                "delete": {"summary": "Remove a function and its versions, and its key-value stores unless `keep_state=true`",
                           "parameters": [name_param(), {"name": "keep_state", "in": "query", "required": false, "schema": {"type": "boolean"}}],
                           "responses": {"204": {"description": "Removed"}, "404": error_response("No such function")}}
            },
            "/v1/functions/{name}/kv/{store}": {"get": {"summary": "List the keys of a store the function declares (manifest keys `kv`, `kv_shared`), 1 000 a page in order",
                "parameters": [name_param(), store_param(), {"name": "cursor", "in": "query", "required": false, "schema": {"type": "string"}, "description": "The `cursor` of the previous page"}],
                "responses": {"200": {"description": "`{keys: [string], cursor: string|null}`; `cursor` is null on the last page"},
                              "404": error_response("No such function, or it declares no such store")}}},
            "/v1/functions/{name}/kv/{store}/{key}": {
                "get": {"summary": "A key's value, as bytes; its revision in `x-limes-revision`", "parameters": [name_param(), store_param(), key_param()],
                        "responses": {"200": {"description": "The value", "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                                      "404": error_response("No such function, store or key")}},
                "put": {"summary": "Set a key to the request body, durably, within the node's limits", "parameters": [name_param(), store_param(), key_param()],
                        "requestBody": {"required": true, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                        "responses": {"204": {"description": "Written"}, "400": error_response("A key or value over the node's limits, or a store full"),
                                      "404": error_response("No such function or store"), "500": error_response("`storage`: the store is unavailable")}},
                "delete": {"summary": "Remove a key (removing a missing key succeeds)", "parameters": [name_param(), store_param(), key_param()],
                           "responses": {"204": {"description": "Removed"}, "404": error_response("No such function or store")}}
            },
            "/v1/deploys/{id}": {"get": {"summary": "A deploy's stages and outcome, by the id in a deploy's `x-limes-deploy` header; this node's deploys in progress and its last 64 finished",
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "`{id, function, steps: [{stage, at_ms}], outcome}`; `outcome` is null while the deploy runs, then `{deployed: version}` or `{failed: {status, kind, message}}`"},
                              "404": error_response("No such deploy on this node (or too old)")}}},
            "/v1/functions/{name}/rollback": {"post": {"summary": "Make another version active",
                "parameters": [name_param(), {"name": "version", "in": "query", "required": true, "schema": {"type": "integer"}}],
                "responses": {"200": {"description": "The function"}, "404": error_response("No such function or version")}}},
            "/v1/functions/{name}/invoke": {"post": {"summary": "Invoke a run function",
                "parameters": [name_param()],
                "requestBody": {"content": {"text/plain": {"schema": {"type": "string"}}}},
                "responses": {
                    "200": {"description": "The result; headers x-limes-cold-start-us, x-limes-execution-us, x-limes-version, x-limes-node (where it ran), x-limes-hops and, when forwarded, x-limes-forward-us (latency forwarding added)",
                            "content": {"text/plain": {"schema": {"type": "string"}}}},
                    "400": error_response("Not a run function, or args not UTF-8"),
                    "404": error_response("No such function"),
                    "429": error_response("Function or node at capacity; see Retry-After"),
                    "500": error_response("The function trapped, hit its memory limit or ran out of fuel"),
                    "504": error_response("The function timed out")}}},
            "/v1/cluster": {"get": {"summary": "The cluster as this node sees it: connection, members and their load, emergency",
                "responses": {"200": {"description": "`{mode, nats, state, node, location, members: [{id, location, capacity, in_flight, listen, forwarded: {node id: calls}}], emergency, last_error}`; `mode: standalone` on a node that runs alone. `forwarded` counts the calls a member forwarded to each other node since it started, as of its last heartbeat"}}}},
            "/v1/emergency": {
                "get": {"summary": "The emergency plan in force", "responses": {"200": {"description": "The plan, or `active: false`"}}},
                "post": {"summary": "Declare an emergency: urgent functions get priority, and nodes are released for them",
                         "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "properties": {
                             "urgent": {"type": "array", "items": {"type": "string"}},
                             "area": {"type": "array", "items": {"type": "number"}, "description": "[x, y, radius]: only nodes inside may be released"},
                             "max_added_ms": {"type": "number", "description": "Bound on the latency consolidation may add to regular work"}}}}}},
                         "responses": {"200": {"description": "The plan"}, "400": error_response("Bad request"),
                                       "409": error_response("Not in a cluster, or another node holds the decision lease"),
                                       "503": error_response("The cluster is unreachable")}},
                "delete": {"summary": "End the emergency and restore normal placement",
                           "responses": {"200": {"description": "Ended"}, "409": error_response("Not in a cluster, or another node holds the decision lease")}}
            },
            "/v1/tokens": {
                "get": {"summary": "Every token: name, role, created, expiry, last use, status (never the secret)",
                        "responses": {"200": {"description": "`{\"tokens\": [...]}`"}}},
                "post": {"summary": "Make a token; the answer is the only place its secret ever appears",
                         "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["role"], "properties": {
                             "role": {"type": "string", "enum": ["admin", "deploy", "invoke", "emergency"]},
                             "name": {"type": "string", "description": "Unique; default ROLE-xxxxxx"},
                             "expires": {"type": "string", "description": "A duration such as 30d; never, when absent"}}}}}},
                         "responses": {"201": {"description": "The token record with `token`, the secret"},
                                       "400": error_response("Bad role, name or duration"),
                                       "409": error_response("A token of that name exists")}}
            },
            "/v1/tokens/{name}": {"delete": {"summary": "Revoke a token; it fails from the next request on, on every node of a cluster",
                "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "The revoked record"}, "404": error_response("No such token")}}},
            "/v1/audit": {"get": {"summary": "The audit log: deploys, removals, rollbacks, emergencies and token changes, with who made them",
                "parameters": [{"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "default": 100}}],
                "responses": {"200": {"description": "`{\"entries\": [{seq, at_ms, actor, action, target, request_id, detail}]}`, oldest first"}}}},
            "/fn/{name}/{path}": {"get": {"summary": "A request to a wasi:http function (any method)",
                "description": "The function sees the request with the path after /fn/{name}.",
                "parameters": [name_param(), {"name": "path", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {"default": {"description": "Whatever the function answers"},
                              "429": error_response("Function or node at capacity")}}}
        },
        "components": {
          "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
              "description": "A Limes token (`limes token create`); each operation lists the roles that may call it in x-limes-roles"}},
          "schemas": {
            "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
                "kind": {"type": "string"}, "message": {"type": "string"}}}}},
            "Deployed": {"type": "object", "properties": {
                "name": {"type": "string"}, "version": {"type": "integer"},
                "digest": {"type": "string"}, "kind": {"type": "string", "enum": ["run", "http"]},
                "signed_by": {"type": "string", "nullable": true},
                "source": {"type": "string", "nullable": true, "description": "oci://HOST/REPO@sha256:… when pulled from a registry"},
                "preinitialized": {"type": "boolean"}}}
        }}
    })
}

/// The workflow routes' part of the document (its own `json!`: one literal of every path
/// exceeds the macro's recursion limit).
fn workflow_paths() -> Value {
    json!({
            "/v1/workflows": {"get": {"summary": "Every workflow",
                "responses": {"200": {"description": "`{workflows: [workflow]}`"}}}},
            "/v1/workflows/{name}": {
                "get": {"summary": "A workflow and its latest runs recorded on this node",
                    "parameters": [name_param()],
                    "responses": {"200": {"description": "`{workflow, recent_runs: [run id]}`"}, "404": error_response("No such workflow")}},
                "put": {"summary": "Deploy a workflow: a graph of steps, each a deployed function",
                    "parameters": [name_param()],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["steps"], "properties": {
                        "priority": {"type": "string", "enum": ["urgent", "regular", "batch"], "description": "Every step runs at this class"},
                        "trigger": {"type": "object", "properties": {"on_message": {"type": "string"}, "delivery": {"type": "string", "enum": ["core", "durable"]}}, "description": "What starts a run besides POST …/runs (in a cluster)"},
                        "max_deliver": {"type": "integer", "description": "Attempts of each step before it is dead-lettered (default 5)"},
                        "retry_backoff": {"type": "string", "description": "The wait before a step's first retry, doubling (default 1s)"},
                        "steps": {"type": "array", "items": {"type": "object", "required": ["name", "function"], "properties": {
                            "name": {"type": "string"}, "function": {"type": "string"},
                            "next": {"type": "array", "items": {"type": "string"}, "description": "Steps the whole result goes to"},
                            "outputs": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}, "description": "Named outputs: the function answers {OUTPUT: payload}"}}}}}}}}},
                    "responses": {"201": {"description": "Deployed: `{workflow}`"}, "200": {"description": "Replaced"},
                        "400": error_response("Not a valid workflow (a cycle, an unknown step or function, a bad subject); nothing is stored"),
                        "403": error_response("The trigger's subject is outside --allow-subject")}},
                "delete": {"summary": "Remove a workflow", "parameters": [name_param()],
                    "responses": {"204": {"description": "Removed"}, "404": error_response("No such workflow")}}},
            "/v1/workflows/{name}/runs": {"post": {"summary": "Start a run; the body (text) is the first step's args",
                "parameters": [name_param()],
                "requestBody": {"content": {"text/plain": {"schema": {"type": "string"}}}},
                "responses": {"202": {"description": "`{workflow, run}`: the first hand-off is durable"}, "404": error_response("No such workflow")}}},
            "/v1/workflows/{name}/runs/{run}": {"get": {"summary": "A run's record: each step's status, node, attempts, times and error",
                "parameters": [name_param(), {"name": "run", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "`{workflow, run, status: running|succeeded|failed, steps: {step: {status: waiting|retrying|succeeded|dead_lettered, node, attempts, started_ms, ended_ms, error}}}`"},
                    "404": error_response("No such workflow or run")}}}
    })
}
