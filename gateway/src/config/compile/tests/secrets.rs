//! A secret written inline where a reference belongs, with the wrong type or with a TOML
//! syntax error, is never echoed: the rendered issue names the file, line and key, never
//! the value.

use super::issues;

/// Stands for a secret in every case below; no message text contains it by chance.
const SECRET: &str = "zq9Sekr1tVALUE";

/// `(config text, the key the issue must name)`, each with the secret written at a key that
/// holds one: wrong types, inline strings and syntax errors the parser stops at.
fn cases() -> Vec<(String, &'static str)> {
    let ledger = |line: &str| format!("[sources.l]\nprovider = \"ledger\"\n{line}\n");
    let ledig = |line: &str| format!("[sources.g]\nprovider = \"ledig\"\n{line}\n");
    let admin = |line: &str| format!("[admin]\n{line}\n");
    let http = |line: &str| format!("[destinations.d]\nhttp = \"https://example.com/\"\n{line}\n");
    let s = SECRET;
    vec![
        (
            ledger(&format!("secrets = \"whsec_{s}\"")),
            "sources.l.secrets",
        ),
        (
            ledger(&format!("secrets = {{ value = \"{s}\" }}")),
            "sources.l.secrets",
        ),
        (
            ledger(&format!("secrets = [{{ value = \"{s}\" }}]")),
            "sources.l.secrets[0]",
        ),
        (
            ledger(&format!("secrets = [\"env:A\", [\"{s}\"]]")),
            "sources.l.secrets[1]",
        ),
        (
            ledger(&format!("secrets = [\"{s}\"]")),
            "sources.l.secrets[0]",
        ),
        (
            ledger(&format!("secrets = [\n  \"env:A\",\n  whsec_{s},\n]")),
            "sources.l.secrets[1]",
        ),
        (
            ledig(&format!("token = {{ value = \"{s}\" }}")),
            "sources.g.token",
        ),
        (ledig(&format!("token = [\"{s}\"]")), "sources.g.token"),
        (ledig("token = 8675309123"), "sources.g.token"),
        (ledig(&format!("token = \"{s}\"")), "sources.g.token"),
        (ledig(&format!("token = {s}")), "sources.g.token"),
        (ledig(&format!("token = \"{s}")), "sources.g.token"),
        (ledig(&format!("token = \"\"\"{s}")), "sources.g.token"),
        (ledig(&format!("token = '{s}")), "sources.g.token"),
        (
            ledig(&format!("token = \"env:X\" \"{s}\"")),
            "sources.g.token",
        ),
        (ledig(&format!("token = 12{s}")), "sources.g.token"),
        (
            ledig(&format!("basic_auth = \"ops:{s}\"")),
            "sources.g.basic_auth",
        ),
        (
            ledig(&format!(
                "basic_auth = {{ username = \"ops\", password = [\"{s}\"] }}"
            )),
            "sources.g.basic_auth.password",
        ),
        (
            ledig(&format!(
                "basic_auth = {{ username = \"ops\", password = {s} }}"
            )),
            "sources.g.basic_auth.password",
        ),
        (
            ledig(&format!(
                "[sources.g.basic_auth]\nusername = \"ops\"\npassword = {{ v = \"{s}\" }}"
            )),
            "sources.g.basic_auth.password",
        ),
        (admin(&format!("token = {{ v = \"{s}\" }}")), "admin.token"),
        (admin(&format!("token = \"{s}\"")), "admin.token"),
        (admin(&format!("token = {s}")), "admin.token"),
        (
            http(&format!("secret = {{ v = \"whsec_{s}\" }}")),
            "destinations.d.secret",
        ),
        (
            http(&format!("secret = \"whsec_{s}\"")),
            "destinations.d.secret",
        ),
        (
            http(&format!("secret = whsec_{s}")),
            "destinations.d.secret",
        ),
        (
            format!("[destinations.d]\nhttp = https://example.com/?token={s}\n"),
            "destinations.d.http",
        ),
        (
            format!("[store]\nurl = \"postgres://gw:{s}@db/gateway\"\n"),
            "store.url",
        ),
        (
            format!("[store]\nurl = {{ password = \"{s}\" }}\n"),
            "store.url",
        ),
        (
            format!("[store]\nurl = postgres://gw:{s}@db/gateway\n"),
            "store.url",
        ),
    ]
}

#[test]
fn a_value_at_a_secret_key_is_never_echoed_whatever_its_type() {
    for (text, key) in cases() {
        let found = issues(&text);
        assert!(!found.is_empty(), "{text}: must be refused");
        for issue in &found {
            let secret = if text.contains("8675309123") {
                "8675309123"
            } else {
                SECRET
            };
            assert!(
                !issue.contains(secret),
                "{text}\nechoes the secret: {issue}"
            );
        }
        assert!(
            found.iter().any(|i| i.contains(&format!(": {key}: "))),
            "{text}\nnames {key}: {found:#?}"
        );
    }
}

#[test]
fn a_wrong_type_at_a_secret_key_names_the_kind_written() {
    let text = format!("[sources.g]\nprovider = \"ledig\"\ntoken = {{ value = \"{SECRET}\" }}\n");
    assert_eq!(
        issues(&text),
        vec![
            "g.toml:3:9: sources.g.token: must be a secret reference string (`env:NAME` or \
             `file:PATH`), not a table; the value is not shown, since this key holds a secret"
        ]
    );
    let text = format!("[sources.l]\nprovider = \"ledger\"\nsecrets = \"whsec_{SECRET}\"\n");
    assert_eq!(
        issues(&text),
        vec![
            "g.toml:3:11: sources.l.secrets: must be a list of secret references (`env:NAME` \
             or `file:PATH`), not a string; the value is not shown, since this key holds a \
             secret"
        ]
    );
}

#[test]
fn values_at_other_keys_are_still_shown() {
    // The written text helps find a mistake where it cannot be a secret.
    assert_eq!(
        issues("[sources.g]\nprovider = \"ledig\"\nunprotected = true\ntoken_header = XYZ\n"),
        vec![
            "g.toml:4:16: sources.g.token_header: `XYZ`: string values must be quoted, \
             expected literal string"
        ]
    );
}

#[test]
fn a_plugin_granted_a_variable_a_secret_reference_reads_is_warned_about() {
    // PATH: a variable every test process has, standing for a secret's.
    let text = "[sources.g]\nprovider = \"ledig\"\ntoken = \"env:PATH\"\n\
                [plugins.p]\nwasm = \"p.wasm\"\nenv = [\"PATH\"]\n";
    assert_eq!(
        super::warnings(text),
        vec![
            "g.toml:6:8: plugins.p.env[0]: grants the plugin PATH, which sources.g.token reads \
             a secret from: the plugin can read that secret"
        ]
    );
    // Granted, but read by no secret reference.
    let files = super::SecretFiles::new();
    let text = text.replace("env:PATH", &files.reference("token", "ledig-token"));
    assert_eq!(super::warnings(&text), Vec::<String>::new());
}
