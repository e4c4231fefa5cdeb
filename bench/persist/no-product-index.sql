-- An experiment (issue 32): the inbox without its index by product, which only the dashboard's
-- "events last applied to this product" reads. What the index costs each applied event.
DROP INDEX processed_events_product;
