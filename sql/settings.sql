-- settings: every ade.* setting exists with its documented default, unit
-- and context (the README's table mirrors this list); ade.abm_url refuses
-- plain http to anything but loopback when it is SET, and ordinary roles
-- cannot change it.
LOAD 'ade';
SELECT name, boot_val AS default, unit, context, vartype, min_val, max_val
  FROM pg_settings WHERE name LIKE 'ade.%' ORDER BY name;

-- loopback http and any https are accepted
SET ade.abm_url = 'http://127.0.0.1:9/';
SET ade.abm_url = 'http://127.1.2.3:9';
SET ade.abm_url = 'http://[::1]:9';
SET ade.abm_url = 'http://localhost:9';
SET ade.abm_url = 'https://mdmenrollment.apple.com';
-- plain http off the machine, other schemes, and garbage are refused at SET
SET ade.abm_url = 'http://0.0.0.0:9';
SET ade.abm_url = 'http://localhost.example.com/';
SET ade.abm_url = 'http://[::2]:9';
SET ade.abm_url = 'ftp://127.0.0.1/';
SET ade.abm_url = 'not a url';
SET ade.abm_url = '';
SHOW ade.abm_url;
RESET ade.abm_url;

-- limits
SET ade.page_size = 1001;
SET ade.page_size = 0;
SET ade.http_timeout = '2s';
SHOW ade.http_timeout;
RESET ade.http_timeout;

-- the prefix is reserved: a typo is an error, not a silent placeholder
SET ade.http_timout = 5;

-- ordinary roles cannot change any ade setting
CREATE ROLE ade_test_nobody;
SET ROLE ade_test_nobody;
SET ade.abm_url = 'https://example.com';
SET ade.http_timeout = 1000;
RESET ROLE;
DROP ROLE ade_test_nobody;
