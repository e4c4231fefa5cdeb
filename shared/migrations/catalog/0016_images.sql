-- Product images: each upload (or source URL) is a job for the imager. `product_images` holds
-- every job's status and, once ready, its variants; `product_details.images` keeps the ready
-- ones in order, so a product's read stays one row (and one cache entry).
CREATE TABLE product_images (
    image_id    UUID PRIMARY KEY,
    product_id  TEXT NOT NULL REFERENCES product_details (product_id),
    status      TEXT NOT NULL CHECK (status IN ('processing', 'ready', 'failed')),
    error       TEXT,
    -- The object key of the upload, or the URL to fetch.
    source      TEXT NOT NULL,
    variants    JSONB,
    attempts    INTEGER NOT NULL DEFAULT 0,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX product_images_product ON product_images (product_id, created_at);

ALTER TABLE product_details ADD COLUMN images JSONB NOT NULL DEFAULT '[]';
