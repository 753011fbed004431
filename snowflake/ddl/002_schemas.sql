-- RAW: landed and staging data; CORE: modelled facts and dimensions.
CREATE SCHEMA IF NOT EXISTS RAW;
CREATE SCHEMA IF NOT EXISTS CORE;
