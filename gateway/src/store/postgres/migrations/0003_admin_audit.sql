-- Who replayed or redrove what, through the admin API (GET /admin/audit). Appended only;
-- every replica writes here, so the audit trail is the cluster's.
CREATE TABLE admin_audit (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         bigint NOT NULL,                 -- unix milliseconds
    actor      text   NOT NULL,                 -- the admin token's name
    action     text   NOT NULL,                 -- replay | redrive
    selection  text   NOT NULL,                 -- the filter, or the object's id
    count      bigint NOT NULL                  -- how many it marked
);
