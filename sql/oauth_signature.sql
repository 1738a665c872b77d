-- oauth_signature: OAuth 1.0a HMAC-SHA1 signing reproduces the test vector of
-- the fixture README exactly (credentials of the fixture token, GET
-- https://mdmenrollment.apple.com/session, timestamp 1700000000).
SELECT ade_oauth_signature('GET', 'https://mdmenrollment.apple.com/session',
  'CK_75b2eb55cec9641e869a7d2c88b4bf1f7ffee504716571d191306385b8647ead9a4239ad6a2095ea0197feb46ce61399',
  'CS_810bb5ab05e53becb3bfbe40b3608a0c9039c457',
  'AT_O8474885631Oe8ddece11c1a70077b340e281a2c4e2c4924a54cO1737111741803',
  'AS_97b944021a19633782a36c2a85038a46d6acaa06',
  1700000000, '4572616e48616d6d65724c61686176') = 'kFeXBjGUEQxcj2UNfkKmB2C/lDc=' AS matches_vector;

-- any change of input changes the signature (timestamp, nonce, secret)
SELECT ade_oauth_signature('GET', 'https://mdmenrollment.apple.com/session',
  'CK_75b2eb55cec9641e869a7d2c88b4bf1f7ffee504716571d191306385b8647ead9a4239ad6a2095ea0197feb46ce61399',
  'CS_810bb5ab05e53becb3bfbe40b3608a0c9039c457',
  'AT_O8474885631Oe8ddece11c1a70077b340e281a2c4e2c4924a54cO1737111741803',
  'AS_97b944021a19633782a36c2a85038a46d6acaa06',
  1700000001, '4572616e48616d6d65724c61686176') = 'kFeXBjGUEQxcj2UNfkKmB2C/lDc=' AS same_after_timestamp_change;
SELECT ade_oauth_signature('GET', 'https://mdmenrollment.apple.com/session',
  'ck', 'cs', 'at', 'as', 1, 'n') <> ade_oauth_signature('GET', 'https://mdmenrollment.apple.com/session',
  'ck', 'cs2', 'at', 'as', 1, 'n') AS secret_changes_signature;

-- RFC 5849 percent-encoding: reserved characters and UTF-8 in secrets
-- (a value computed independently with Python's hmac and urllib.parse.quote)
SELECT ade_oauth_signature('GET', 'http://127.0.0.1:8080/session',
  'key with space', 'sec&ret=+/', 'tok~en', 'sëcret', 42, 'a b') = 'jhA4J3M7up+NFxuu0thi6Ekg0kM=' AS matches_independent_value;
