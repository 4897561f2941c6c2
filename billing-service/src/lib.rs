//! billing-service
