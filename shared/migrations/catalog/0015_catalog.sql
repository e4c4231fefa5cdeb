-- The catalog: a product's details, written by the gateway (POST and PATCH /products). Its
-- price and stock stay in `products`, set by events (a creation is one). `revision` counts the
-- changes, so a cache write never replaces a newer entry with an older one.
CREATE TABLE product_details (
    product_id         TEXT PRIMARY KEY,
    name               TEXT COLLATE "C" NOT NULL,
    description        TEXT,
    category           TEXT COLLATE "C" NOT NULL,
    tags               TEXT[] NOT NULL DEFAULT '{}',
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL,
    revision           BIGINT NOT NULL DEFAULT 1,
    -- The creating request's fingerprint: a retry of the same creation goes on, another is 409.
    create_fingerprint TEXT NOT NULL,
    search             TSVECTOR GENERATED ALWAYS AS
                       (to_tsvector('english', name || ' ' || coalesce(description, ''))) STORED
);

-- Each listing order, unfiltered and within a category, walks an index in key order.
CREATE INDEX product_details_name ON product_details (name, product_id);
CREATE INDEX product_details_category_name ON product_details (category, name, product_id);
CREATE INDEX product_details_created ON product_details (created_at, product_id);
CREATE INDEX product_details_category_created ON product_details (category, created_at, product_id);
CREATE INDEX product_details_tags ON product_details USING GIN (tags);
CREATE INDEX product_details_search ON product_details USING GIN (search);
