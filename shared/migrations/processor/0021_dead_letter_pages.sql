-- The dead-letter list pages in (first_failed_at, id) order, each page starting after the last
-- row of the one before.
CREATE INDEX dead_letters_pages ON dead_letters (first_failed_at, id);
