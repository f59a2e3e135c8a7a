output "role_name" {
  description = "Name of the role."
  value       = aws_iam_role.this.name
}

output "role_arn" {
  description = "ARN of the role."
  value       = aws_iam_role.this.arn
}

output "policy_name" {
  description = "Name of the role's inline read policy."
  value       = aws_iam_role_policy.read.name
}
