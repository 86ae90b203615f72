"""The provider's API: typed models (`models`) and the HTTP client (`client`)."""
