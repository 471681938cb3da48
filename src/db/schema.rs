//! Table definitions shared by the SQLite and PostgreSQL backends. Only
//! portable types are used: ids and JSON as text, UTC timestamps without zone.

diesel::table! {
    users (id) {
        id -> Text,
        username -> Text,
        password_hash -> Text,
        is_active -> Bool,
        is_superuser -> Bool,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        last_login_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    sessions (id) {
        id -> Text,
        user_id -> Text,
        token_hash -> Text,
        created_at -> Timestamp,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    api_keys (id) {
        id -> Text,
        user_id -> Text,
        name -> Nullable<Text>,
        key_hash -> Text,
        display_prefix -> Text,
        created_at -> Timestamp,
        last_used_at -> Nullable<Timestamp>,
        total_uses -> BigInt,
        is_active -> Bool,
        expires_at -> Nullable<Timestamp>,
        flow_id -> Nullable<Text>,
        scopes -> Nullable<Text>,
        allowed_ips -> Nullable<Text>,
        rate_limit_requests -> Nullable<BigInt>,
        rate_limit_seconds -> Nullable<BigInt>,
        last_used_from -> Nullable<Text>,
    }
}

diesel::table! {
    key_usage_hours (key_id, hour) {
        key_id -> Text,
        hour -> Timestamp,
        requests -> BigInt,
        refused -> BigInt,
    }
}

diesel::table! {
    key_usage_days (key_id, day) {
        key_id -> Text,
        day -> Timestamp,
        requests -> BigInt,
        refused -> BigInt,
    }
}

diesel::table! {
    rate_limit_windows (key_id, window_seconds, window_start) {
        key_id -> Text,
        window_seconds -> BigInt,
        window_start -> BigInt,
        window_end -> BigInt,
        count -> BigInt,
    }
}

diesel::table! {
    key_inserts (seq) {
        seq -> BigInt,
        key_hash -> Text,
    }
}

diesel::table! {
    flows (id) {
        id -> Text,
        user_id -> Text,
        name -> Text,
        description -> Nullable<Text>,
        endpoint_name -> Nullable<Text>,
        data -> Nullable<Text>,
        upstream -> Nullable<Text>,
        access -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        is_component -> Bool,
        folder_id -> Nullable<Text>,
        icon -> Nullable<Text>,
        icon_bg_color -> Nullable<Text>,
        gradient -> Nullable<Text>,
        tags -> Nullable<Text>,
        locked -> Bool,
        mcp_enabled -> Bool,
        webhook -> Bool,
    }
}

diesel::joinable!(sessions -> users (user_id));
diesel::joinable!(api_keys -> users (user_id));

diesel::table! {
    settings (key) {
        key -> Text,
        value -> Text,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    provider_credentials (id) {
        id -> Text,
        user_id -> Text,
        provider -> Text,
        host -> Nullable<Text>,
        public_key -> Nullable<Text>,
        secret_enc -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    variables (id) {
        id -> Text,
        user_id -> Text,
        name -> Text,
        var_type -> Text,
        value -> Text,
        default_fields -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::joinable!(provider_credentials -> users (user_id));
diesel::joinable!(variables -> users (user_id));
diesel::joinable!(flows -> users (user_id));
diesel::allow_tables_to_appear_in_same_query!(
    users,
    sessions,
    api_keys,
    settings,
    provider_credentials,
    variables,
    flows
);

diesel::table! {
    audit_events (id) {
        id -> Text,
        at -> Timestamp,
        action -> Text,
        user_id -> Nullable<Text>,
        actor_user_id -> Nullable<Text>,
        actor_key_id -> Nullable<Text>,
        target_id -> Nullable<Text>,
        address -> Nullable<Text>,
        user_agent -> Nullable<Text>,
        detail -> Text,
    }
}
