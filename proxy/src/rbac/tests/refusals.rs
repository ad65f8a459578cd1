//! Configs that must be refused, and the exact error texts.

use super::*;

// --- refused configs ----------------------------------------------------------------------

fn policy_err(permission: &str, principal: &str) -> String {
    engine_err(&format!(
        "policies:\n  ns[default]-policy[x]-rule[0]:\n    permissions: [{{any: true}}, {permission}]\n    principals: [{principal}]\n"
    ))
}

#[test]
fn unsupported_and_invalid_fields_name_their_path() {
    const P: &str = "policies[\"ns[default]-policy[x]-rule[0]\"]";
    let cases = [
        (
            policy_err("{header: {name: x, prefix_match: ''}}", "{any: true}"),
            format!("{P}.permissions[1].header: prefix_match must not be empty"),
        ),
        (
            policy_err("{any: true}", "{filter_state: {key: io.istio.peer_principal, string_match: {exact: a}}}"),
            format!(
                "{P}.principals[0].filter_state: filter_state principals (waypoint identity) is not \
                 supported; refusing the config rather than ignoring a rule that decides who is allowed"
            ),
        ),
        (
            policy_err("{sourced_metadata: {metadata_matcher: {filter: a, path: [{key: b}], value: {present_match: true}}}}", "{any: true}"),
            format!(
                "{P}.permissions[1].sourced_metadata: sourced_metadata (route metadata) is not \
                 supported; refusing the config rather than ignoring a rule that decides who is allowed"
            ),
        ),
        (
            policy_err("{any: false}", "{any: true}"),
            format!("{P}.permissions[1].any: `any` must be true when set"),
        ),
        (
            policy_err("{destination_port: 70000}", "{any: true}"),
            format!("{P}.permissions[1].destination_port: destination_port 70000 is out of range (at most 65535)"),
        ),
        (
            policy_err("{destination_port_range: {start: 90, end: 90}}", "{any: true}"),
            format!("{P}.permissions[1].destination_port_range: range start 90 cannot be greater or equal than range end 90"),
        ),
        (
            policy_err("{and_rules: {rules: []}}", "{any: true}"),
            format!("{P}.permissions[1].and_rules.rules: the list of permissions must not be empty"),
        ),
        (
            policy_err("{not_rule: {}}", "{any: true}"),
            format!("{P}.permissions[1].not_rule: a permission rule must be set (it is empty, or uses a field this proxy does not know)"),
        ),
        (
            policy_err("{requested_server_name: {safe_regex: {regex: '('}}}", "{any: true}"),
            format!("{P}.permissions[1].requested_server_name: invalid safe_regex \"(\": regex parse error:"),
        ),
        (
            policy_err("{any: true}", "{authenticated: {principal_name: {prefix: ''}}}"),
            format!("{P}.principals[0].authenticated.principal_name: string matcher prefix must not be empty (use safe_regex to match anything)"),
        ),
        (
            policy_err("{any: true}", "{remote_ip: {address_prefix: not-an-ip}}"),
            format!("{P}.principals[0].remote_ip: malformed IP address: \"not-an-ip\""),
        ),
        (
            policy_err("{uri_template: {name: t, typed_config: {'@type': type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig, path_template: '/**/a/*'}}}", "{any: true}"),
            format!("{P}.permissions[1].uri_template: invalid path_template \"/**/a/*\": glob after text glob"),
        ),
        (
            policy_err("{metadata: {filter: f, path: [{key: k}], value: {}}}", "{any: true}"),
            format!("{P}.permissions[1].metadata: value matcher must be set (it is empty, or uses a field this proxy does not know)"),
        ),
        (
            engine_err("policies: {p: {permissions: [], principals: [{any: true}]}}"),
            "policies[\"p\"].permissions: the list of permissions must not be empty".to_string(),
        ),
        (
            engine_err("policies: {p: {permissions: [{any: true}], principals: [{any: true}], condition: {const_expr: {bool_value: true}}}}"),
            "policies[\"p\"].condition: CEL conditions is not supported; refusing the config rather than ignoring a rule that decides who is allowed".to_string(),
        ),
    ];
    for (got, want) in cases {
        // Regex errors span lines; the first names the field and the pattern.
        assert_eq!(got.lines().next(), Some(want.as_str()));
    }
}

#[test]
fn filter_level_refusals() {
    let store = Store::new(None).unwrap();
    let err = |r: Result<NetworkRbac, crate::config::ConfigError>| r.unwrap_err().to_string();
    assert_eq!(
        err(NetworkRbac::new(&yaml::<NetworkProto>("rules: {}"), &store)),
        "stat_prefix: stat_prefix must not be empty"
    );
    assert_eq!(
        err(NetworkRbac::new(
            &yaml::<NetworkProto>("stat_prefix: t\nmatcher: {}"),
            &store
        )),
        "matcher: the xDS matcher API for RBAC (use rules / shadow_rules) is not supported; \
         refusing the config rather than ignoring a rule that decides who is allowed"
    );
    let bad_action = HttpProto {
        rules: Some(Rbac {
            action: 7,
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(
        HttpRbac::new(&bad_action, &store, "http.x.")
            .unwrap_err()
            .to_string(),
        "rules.action: unknown action value 7"
    );
    let bad_shadow = yaml::<HttpProto>(
        "shadow_rules: {policies: {p: {permissions: [{any: true}], principals: []}}}",
    );
    assert_eq!(
        HttpRbac::new(&bad_shadow, &store, "http.x.")
            .unwrap_err()
            .to_string(),
        "shadow_rules.policies[\"p\"].principals: the list of principals must not be empty"
    );
}
